#!/usr/bin/env python3
"""Before `azd provision`: can the chat model this environment asks for be deployed, in its region, with quota?

azd runs this as the preprovision hook (azure.yaml). It reads the azd environment, which azd hands
to hooks as environment variables, asks the Azure CLI what the region offers
(`az cognitiveservices model list`) and how much of the subscription's quota is left there
(`az cognitiveservices usage list`), and either prints one OK line or stops provisioning with a
paragraph that says what is missing and what to do. It also warns when the model version retires
within 90 days.

The variables, and the defaults they share with infra/main.bicep and infra/main.parameters.json:

    AZURE_OPENAI_LOCATION             region of the OpenAI account; empty: AZURE_LOCATION
    AZURE_OPENAI_MODEL_NAME           gpt-5.6-luna
    AZURE_OPENAI_MODEL_VERSION        2026-07-09
    AZURE_OPENAI_DEPLOYMENT_SKU       GlobalStandard
    AZURE_OPENAI_DEPLOYMENT_CAPACITY  30 (thousand tokens per minute)
    AZURE_OPENAI_CHAT_DEPLOYMENT      chat
    AZURE_OPENAI_SKIP_MODEL_CHECK     true: skip this check

Exit status: 0 deployable (warnings allowed), 1 not deployable as asked, 2 the check could not run.
Standard library only, Python 3.8 or later: it runs on the deploying machine, outside any venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

DEFAULTS = {
    "AZURE_OPENAI_MODEL_NAME": "gpt-5.6-luna",
    "AZURE_OPENAI_MODEL_VERSION": "2026-07-09",
    "AZURE_OPENAI_DEPLOYMENT_SKU": "GlobalStandard",
    "AZURE_OPENAI_DEPLOYMENT_CAPACITY": "30",
    "AZURE_OPENAI_CHAT_DEPLOYMENT": "chat",
}
ACCOUNT_KIND = "OpenAI"  # infra/app/openai.bicep creates a kind 'OpenAI' account
RETIREMENT_WARNING_DAYS = 90
AZ_TIMEOUT_SECONDS = 120
QUOTA_REQUEST_URL = "https://aka.ms/oai/stuquotarequest"
SKIP_HINT = "To provision without this check: azd env set AZURE_OPENAI_SKIP_MODEL_CHECK true."


class CannotDeploy(Exception):
    """The model, version, SKU or capacity asked for cannot be deployed there: exit 1."""


class CannotCheck(Exception):
    """The Azure CLI could not answer (missing, not signed in, unexpected output): exit 2."""


@dataclass(frozen=True)
class Wanted:
    """The deployment infra/app/openai.bicep will create."""

    location: str
    model: str
    version: str
    sku: str
    capacity: int
    deployment: str

    def describe(self) -> str:
        return f"{self.model} version {self.version} ({self.sku}, {self.capacity}k tokens per minute)"


@dataclass(frozen=True)
class Offer:
    """What the region's model list says about the wanted model, version and SKU."""

    usage_name: str
    retires: date | None
    lifecycle: str


@dataclass(frozen=True)
class Quota:
    limit: float
    used: float
    held_by_this_deployment: float

    @property
    def free(self) -> float:
        return self.limit - self.used + self.held_by_this_deployment


def _setting(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or DEFAULTS.get(name, "")).strip()


def read_wanted(env: Mapping[str, str]) -> Wanted | None:
    """The deployment asked for; None while no region has been chosen yet."""
    location = _setting(env, "AZURE_OPENAI_LOCATION") or _setting(env, "AZURE_LOCATION")
    if not location:
        return None
    raw_capacity = _setting(env, "AZURE_OPENAI_DEPLOYMENT_CAPACITY")
    try:
        capacity = int(raw_capacity)
    except ValueError:
        raise CannotCheck(
            f"AZURE_OPENAI_DEPLOYMENT_CAPACITY is {raw_capacity!r}, not a whole number of thousands of tokens "
            "per minute. Set it with `azd env set AZURE_OPENAI_DEPLOYMENT_CAPACITY 30` and run `azd up` again."
        ) from None
    return Wanted(
        location=location.lower().replace(" ", ""),
        model=_setting(env, "AZURE_OPENAI_MODEL_NAME"),
        version=_setting(env, "AZURE_OPENAI_MODEL_VERSION"),
        sku=_setting(env, "AZURE_OPENAI_DEPLOYMENT_SKU"),
        capacity=capacity,
        deployment=_setting(env, "AZURE_OPENAI_CHAT_DEPLOYMENT"),
    )


class AzureCli:
    """The few `az` calls this check makes, each returning parsed JSON."""

    def __init__(self, executable: str, subscription: str) -> None:
        self.executable = executable
        self.subscription = subscription

    @classmethod
    def find(cls, env: Mapping[str, str]) -> AzureCli:
        executable = shutil.which("az", path=env.get("PATH"))
        if executable is None:
            raise CannotCheck(
                "The Azure CLI (`az`) is not installed or not on PATH, so the model, region and quota "
                "cannot be checked before provisioning. Install it (https://aka.ms/azure-cli), run "
                f"`az login` with the account you gave `azd auth login`, and run `azd up` again. {SKIP_HINT}"
            )
        return cls(executable, (env.get("AZURE_SUBSCRIPTION_ID") or "").strip())

    def json(self, *args: str) -> Any:
        command = [self.executable, *args, "--output", "json"]
        if self.subscription:
            command += ["--subscription", self.subscription]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, encoding="utf-8", errors="replace",
                timeout=AZ_TIMEOUT_SECONDS, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise CannotCheck(f"`az {' '.join(args)}` did not run: {error}. {SKIP_HINT}") from None
        if done.returncode != 0:
            said = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
            if "az login" in said:
                raise CannotCheck(
                    f"The Azure CLI is not signed in (it said: {said}). Run `az login` with the account you gave "
                    f"`azd auth login` and run `azd up` again. {SKIP_HINT}"
                )
            raise CannotCheck(f"`az {' '.join(args)}` failed: {said}. {SKIP_HINT}")
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise CannotCheck(f"`az {' '.join(args)}` printed something that is not JSON. {SKIP_HINT}") from None

    def models(self, location: str) -> list[dict[str, Any]]:
        return _as_list(self.json("cognitiveservices", "model", "list", "--location", location))

    def usages(self, location: str) -> list[dict[str, Any]]:
        return _as_list(self.json("cognitiveservices", "usage", "list", "--location", location))

    def deployments(self, resource_group: str, account: str) -> list[dict[str, Any]]:
        return _as_list(self.json(
            "cognitiveservices", "account", "deployment", "list", "--resource-group", resource_group,
            "--name", account,
        ))


def _as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict) and isinstance(value.get("value"), list):  # a raw ARM page
        value = value["value"]
    if not isinstance(value, list):
        raise CannotCheck(f"The Azure CLI answered with {type(value).__name__}, not a list. {SKIP_HINT}")
    return [item for item in value if isinstance(item, dict)]


def _day(value: Any) -> date | None:
    """'2028-01-11T00:00:00Z' -> date(2028, 1, 11). Only the date part: fromisoformat() takes 'Z' from 3.11 on."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def find_offer(models: Sequence[Mapping[str, Any]], wanted: Wanted) -> Offer:
    """The model list entry for the wanted model, version and SKU, or CannotDeploy saying which is missing."""
    entries = [
        entry["model"] for entry in models
        if isinstance(entry.get("model"), dict)
        and entry.get("kind", ACCOUNT_KIND) == ACCOUNT_KIND
        and entry["model"].get("format", "OpenAI") == "OpenAI"
        and str(entry["model"].get("name", "")).lower() == wanted.model.lower()
    ]
    if not entries:
        raise CannotDeploy(
            f"{wanted.model} is not offered to Azure OpenAI accounts in {wanted.location}. Put the OpenAI account "
            "in a region that offers it (`azd env set AZURE_OPENAI_LOCATION <region>`; only the account moves, "
            f"`az cognitiveservices model list --location <region>` shows what a region offers), or choose another "
            "model with `azd env set AZURE_OPENAI_MODEL_NAME <model>` and `azd env set AZURE_OPENAI_MODEL_VERSION "
            "<version>`, then run `azd up` again."
        )
    versions = [entry for entry in entries if str(entry.get("version", "")) == wanted.version]
    if not versions:
        offered = ", ".join(sorted({str(entry.get("version", "?")) for entry in entries}))
        raise CannotDeploy(
            f"{wanted.model} version {wanted.version} is not offered in {wanted.location}; the versions offered "
            f"there are {offered}. Choose one with `azd env set AZURE_OPENAI_MODEL_VERSION <version>`, or put the "
            f"OpenAI account in a region that offers {wanted.version} (`azd env set AZURE_OPENAI_LOCATION "
            "<region>`), then run `azd up` again."
        )
    model = versions[0]
    skus = [sku for sku in model.get("skus") or [] if isinstance(sku, dict)]
    matching = [sku for sku in skus if str(sku.get("name", "")).lower() == wanted.sku.lower()]
    if not matching:
        offered = ", ".join(sorted({str(sku.get("name", "?")) for sku in skus})) or "no deployment type at all"
        raise CannotDeploy(
            f"{wanted.model} version {wanted.version} is offered in {wanted.location} as {offered}, not as "
            f"{wanted.sku}. Choose one of those with `azd env set AZURE_OPENAI_DEPLOYMENT_SKU <type>`, or put the "
            f"OpenAI account in a region that offers {wanted.sku} (`azd env set AZURE_OPENAI_LOCATION <region>`), "
            "then run `azd up` again."
        )
    sku = matching[0]
    deprecation = model.get("deprecation") if isinstance(model.get("deprecation"), dict) else {}
    return Offer(
        usage_name=str(sku.get("usageName") or f"OpenAI.{wanted.sku}.{wanted.model}"),
        retires=_day(sku.get("deprecationDate")) or _day(deprecation.get("inference")),
        lifecycle=str(model.get("lifecycleStatus", "")),
    )


def lifecycle_warnings(offer: Offer, wanted: Wanted, today: date) -> list[str]:
    """Warnings about the version's lifecycle; CannotDeploy once it has retired."""
    if offer.lifecycle.lower() == "retired" or (offer.retires is not None and offer.retires <= today):
        when = f" on {offer.retires.isoformat()}" if offer.retires else ""
        raise CannotDeploy(
            f"{wanted.model} version {wanted.version} retired{when} in {wanted.location}; a new deployment of it "
            "fails. Choose a current version or model (`azd env set AZURE_OPENAI_MODEL_VERSION <version>`, "
            "`azd env set AZURE_OPENAI_MODEL_NAME <model>`; infra/README.md lists the retirement dates), then run "
            "`azd up` again."
        )
    warnings = []
    if offer.retires is not None and (offer.retires - today).days <= RETIREMENT_WARNING_DAYS:
        warnings.append(
            f"WARNING: {wanted.model} version {wanted.version} retires on {offer.retires.isoformat()}, in "
            f"{(offer.retires - today).days} days; after that its deployment only returns errors. Plan the move to "
            "a newer model or version (AZURE_OPENAI_MODEL_NAME, AZURE_OPENAI_MODEL_VERSION)."
        )
    lifecycle = offer.lifecycle.lower()
    if lifecycle in ("deprecating", "deprecated"):
        warnings.append(
            f"WARNING: {wanted.model} version {wanted.version} is {lifecycle}: subscriptions that never deployed "
            "it can no longer create a deployment of it, so provisioning may fail."
        )
    elif lifecycle in ("legacy", "preview"):
        warnings.append(
            f"WARNING: {wanted.model} version {wanted.version} is {lifecycle}: "
            + ("newer models exist and it will be deprecated; plan the move."
               if lifecycle == "legacy" else "it can change or retire at short notice; prefer a GA version.")
        )
    return warnings


def find_quota(usages: Sequence[Mapping[str, Any]], usage_name: str, held: float, wanted: Wanted) -> Quota:
    """The subscription's quota for the model and SKU in the region, or CannotDeploy if too little is left."""
    for usage in usages:
        name = usage.get("name") if isinstance(usage.get("name"), dict) else {}
        if str(name.get("value", "")).lower() == usage_name.lower():
            quota = Quota(float(usage.get("limit") or 0), float(usage.get("currentValue") or 0), held)
            break
    else:
        raise CannotDeploy(
            f"The subscription has no {wanted.sku} quota for {wanted.model} in {wanted.location} (no usage named "
            f"{usage_name}). Request quota ({QUOTA_REQUEST_URL}), or put the OpenAI account in a region where you "
            "have it (`azd env set AZURE_OPENAI_LOCATION <region>`), then run `azd up` again."
        )
    if quota.free < wanted.capacity:
        in_use = f"{quota.used:g} in use" + (f", {held:g} of it by this environment's own deployment" if held else "")
        lower = (
            f"lower AZURE_OPENAI_DEPLOYMENT_CAPACITY to {int(quota.free)} or less "
            "(`azd env set AZURE_OPENAI_DEPLOYMENT_CAPACITY <n>`), "
            if quota.free >= 1 else ""
        )
        raise CannotDeploy(
            f"Not enough quota for {wanted.describe()} in {wanted.location}: the subscription's {wanted.sku} quota "
            f"for {wanted.model} there is {quota.limit:g} thousand tokens per minute, {in_use}, so "
            f"{max(quota.free, 0):g} is free. Either {lower}free quota by deleting deployments you no longer need, "
            f"request more ({QUOTA_REQUEST_URL}), or put the OpenAI account in another region "
            "(`azd env set AZURE_OPENAI_LOCATION <region>`), then run `azd up` again."
        )
    return quota


def held_by_this_deployment(cli: AzureCli, env: Mapping[str, str], wanted: Wanted) -> float:
    """Quota this environment's existing deployment already holds, which re-provisioning reuses.

    Known only after a first provision (its outputs AZURE_RESOURCE_GROUP and AZURE_OPENAI_ACCOUNT_NAME).
    Any failure counts as nothing held: the account may have been deleted since.
    """
    resource_group = (env.get("AZURE_RESOURCE_GROUP") or "").strip()
    account = (env.get("AZURE_OPENAI_ACCOUNT_NAME") or "").strip()
    if not (resource_group and account):
        return 0.0
    try:
        deployments = cli.deployments(resource_group, account)
    except CannotCheck:
        return 0.0
    for deployment in deployments:
        sku = deployment.get("sku") if isinstance(deployment.get("sku"), dict) else {}
        properties = deployment.get("properties") if isinstance(deployment.get("properties"), dict) else {}
        model = properties.get("model") if isinstance(properties.get("model"), dict) else {}
        if (
            deployment.get("name") == wanted.deployment
            and str(sku.get("name", "")).lower() == wanted.sku.lower()
            and str(model.get("name", "")).lower() == wanted.model.lower()
        ):
            return float(sku.get("capacity") or 0)
    return 0.0


def check(env: Mapping[str, str], today: date) -> list[str]:
    """The lines to print when the deployment can be made; raises CannotDeploy or CannotCheck otherwise."""
    if _setting(env, "AZURE_OPENAI_SKIP_MODEL_CHECK").lower() in ("1", "true", "yes"):
        return ["Azure OpenAI model check skipped (AZURE_OPENAI_SKIP_MODEL_CHECK)."]
    wanted = read_wanted(env)
    if wanted is None:
        return [
            "WARNING: Azure OpenAI model check skipped: no region chosen yet (AZURE_LOCATION is empty). "
            "Run `azd env set AZURE_LOCATION <region>` before `azd provision` to have the model and quota checked."
        ]
    cli = AzureCli.find(env)
    offer = find_offer(cli.models(wanted.location), wanted)
    lines = lifecycle_warnings(offer, wanted, today)
    held = held_by_this_deployment(cli, env, wanted)
    quota = find_quota(cli.usages(wanted.location), offer.usage_name, held, wanted)
    retires = f"; it retires on {offer.retires.isoformat()}" if offer.retires else ""
    lines.append(
        f"Azure OpenAI model check OK: {wanted.describe()} is offered in {wanted.location}, "
        f"{quota.free:g} of {quota.limit:g} thousand tokens per minute of quota free{retires}."
    )
    return lines


def main() -> int:
    try:
        lines = check(os.environ, date.today())
    except CannotDeploy as problem:
        print(f"Azure OpenAI model check failed: {problem}", file=sys.stderr)
        return 1
    except CannotCheck as problem:
        print(f"Azure OpenAI model check could not run: {problem}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
