// httpyac configuration: lets demo.http, written for VS Code REST Client, run unchanged under httpyac
// (`npx httpyac send demo.http --all`). REST Client stays the reference: everything here only teaches httpyac
// a REST Client convention it lacks. Pinned to httpyac 6.16.x (package.json); tests/test_demo_http.py runs it.
//
// 1. Response references. REST Client writes `{{name.response.body.$.field}}` (JSONPath on a JSON body),
//    `{{name.response.body.*}}` (the whole body) and `{{name.response.headers.Header-Name}}`; httpyac's own form
//    is `{{name.field}}`, and it fails on REST Client's. They are resolved here from the response httpyac keeps
//    for the named request (`# @name name`).
// 2. Prompts. REST Client's `# @prompt name description` asks the person at the keyboard. httpyac runs
//    unattended, so the prompt is answered with `--var name=value` when given, else with the id of the first
//    `message` event (the answer's first text) of the latest text/event-stream response: demo.http prompts only
//    for event ids to resume after, mid-answer.
// 3. Assertions in comments. httpyac's `?? status == 202` lines are not REST Client syntax (REST Client would
//    send them as part of the request), so demo.http writes them as comments, `# ?? status == 202`, which
//    REST Client ignores and which are handed to httpyac's own assertion parser here.
// 4. Command-line variables win. httpyac lets a file's `@host = ...` overwrite `--var host=...`; here a
//    variable given on the command line is kept, so the file's value is a default:
//    `npx httpyac send demo.http --all --var host=http://127.0.0.1:8000`.

const COMMENTED_ASSERTION = /^\s*(?:#+|\/{2,})\s*(\?\?.*)$/u;
const RESPONSE_REFERENCE = /^\s*([A-Za-z_]\w*)\.(response|request)\.(body|headers)\.(.+?)\s*$/u;

module.exports = {
  configureHooks(api) {
    const commandLine = commandLineVariables(process.argv);

    // 4. Before each file variable `@name = ...` is set, keep a value given with --var.
    api.hooks.parseEndRegion.addHook('commandLineVariablesWin', ({ httpRegion }) => {
      httpRegion.hooks.execute.addInterceptor({
        id: 'commandLineVariablesWin',
        async beforeTrigger(hookContext) {
          const name = hookContext.hookItem?.id.match(/^variable_(.+)$/u)?.[1];
          if (name && Object.hasOwn(commandLine, name)) {
            hookContext.hookItem = { ...hookContext.hookItem, action: async () => true };
          }
          return true;
        },
      });
    });

    // 3. `# ?? ...` -> httpyac's `?? ...` assertion (the parser httpyac registers as 'assert').
    api.hooks.parse.addHook(
      'commentedAssertion',
      (getLineReader, context) => {
        const first = getLineReader().next();
        const match = !first.done && COMMENTED_ASSERTION.exec(first.value.textLine);
        if (!match) {
          return false;
        }
        const assertParser = api.hooks.parse.items.find(item => item.id === 'assert');
        if (!assertParser) {
          throw new Error('httpyac no longer registers its assertion parser as "assert"; update httpyac.config.js');
        }
        const uncommented = function* () {
          yield { ...first.value, textLine: match[1] };
        };
        return assertParser.action(uncommented, context);
      },
      { before: ['meta'] }
    );

    // 2. Answer `# @prompt name description`.
    api.hooks.parseMetaData.addHook('prompt', (type, value, { httpRegion }) => {
      if (type !== 'prompt' || !value) {
        return false;
      }
      const name = value.trim().split(/\s+/u)[0];
      httpRegion.hooks.execute.addHook(`prompt_${name}`, async context => {
        if (Object.hasOwn(commandLine, name)) {
          context.variables[name] = commandLine[name];
          return true;
        }
        const eventIds = context.variables.$lastEventStreamIds;
        if (!Array.isArray(eventIds) || eventIds.length === 0) {
          throw new Error(`httpyac cannot answer "# @prompt ${name}": no event stream was received before it; ` +
            `pass --var ${name}=...`);
        }
        context.variables[name] = eventIds[0];
        return true;
      });
      return true;
    });
    api.hooks.onResponse.addHook('rememberEventStreamIds', (response, context) => {
      if (/^text\/event-stream/iu.test(response.contentType?.mimeType || '') && typeof response.body === 'string') {
        const ids = response.body.split(/\n\n/u).filter(block => /^event: ?message$/mu.test(block))
          .map(block => (block.match(/^id: ?(.*)$/mu) || [])[1]).filter(Boolean);
        context.variables.$lastEventStreamIds = ids;
      }
    });

    // 1. `{{name.response.body.$.path}}`, `{{name.response.body.*}}`, `{{name.response.headers.Name}}`.
    api.hooks.replaceVariable.addHook(
      'restClientResponseReference',
      async (text, _type, context) => {
        if (typeof text !== 'string') {
          return text;
        }
        return api.utils.parseHandlebarsString(text, async expression => {
          const match = RESPONSE_REFERENCE.exec(expression);
          if (!match) {
            return undefined; // not a REST Client request reference: httpyac's other replacers handle it
          }
          const [, name, side, part, path] = match;
          const response = context.variables[`${name}Response`];
          if (!response) {
            throw new Error(`{{${expression.trim()}}}: send the request named "${name}" first`);
          }
          const message = side === 'response' ? response : response.request;
          return part === 'headers' ? header(message.headers, path) : bodyValue(message, path, expression);
        });
      },
      { before: ['host', 'name', 'javascript'] }
    );
  },
};

function commandLineVariables(argv) {
  // The values of `--var a=1 b=2` (commander collects every word after --var up to the next option).
  const result = {};
  let inVar = false;
  for (const arg of argv.slice(2)) {
    if (arg === '--var') {
      inVar = true;
    } else if (arg.startsWith('-')) {
      inVar = false;
    } else if (inVar && arg.includes('=')) {
      const [key, ...rest] = arg.split('=');
      result[key] = rest.join('=');
    }
  }
  return result;
}

function header(headers, name) {
  const wanted = name.toLowerCase();
  const found = Object.entries(headers || {}).find(([key]) => key.toLowerCase() === wanted);
  return found ? [].concat(found[1]).join(', ') : '';
}

function bodyValue(message, path, expression) {
  const raw = typeof message.body === 'string' ? message.body : message.body?.toString?.() ?? '';
  if (path === '*') {
    return raw;
  }
  if (!path.startsWith('$')) {
    throw new Error(`{{${expression.trim()}}}: only JSONPath ($...) and * are supported on bodies here`);
  }
  let value = message.parsedBody;
  if (value === undefined) {
    try {
      value = JSON.parse(raw);
    } catch {
      throw new Error(`{{${expression.trim()}}}: the body is not JSON`);
    }
  }
  for (const step of jsonPathSteps(path, expression)) {
    value = value?.[step];
  }
  if (value === undefined) {
    throw new Error(`{{${expression.trim()}}}: no such field in the response body`);
  }
  return typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
}

function jsonPathSteps(path, expression) {
  // The subset demo.http needs and most REST Client files use: $.a.b, $.a[0], $['a'].
  const steps = [];
  const step = /\.([A-Za-z_$][\w$-]*)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]/gy;
  step.lastIndex = 1;
  while (step.lastIndex < path.length) {
    const match = step.exec(path);
    if (!match) {
      throw new Error(`{{${expression.trim()}}}: unsupported JSONPath ${path}`);
    }
    steps.push(match[1] ?? (match[2] !== undefined ? Number(match[2]) : match[3] ?? match[4]));
  }
  return steps;
}
