"""What the offline demo model knows about cities: a few highlights each, for its templated itineraries.

Plain data, kept apart from the model's logic; any other place gets generic
highlights that read naturally.
"""

from __future__ import annotations

from dataclasses import dataclass

from tools import canonical_city


@dataclass(frozen=True)
class CityGuide:
    old_quarter: str
    landmark: str
    museum: str
    market: str
    viewpoint: str
    park: str
    day_trip: str
    dishes: tuple[str, str, str]  # (lunch, dinner, snack or treat)
    transit: str


GUIDES: dict[str, CityGuide] = {
    "Tokyo": CityGuide(
        "Asakusa and Senso-ji temple", "Meiji Shrine and Harajuku", "the Tokyo National Museum in Ueno",
        "Tsukiji Outer Market", "Shibuya Sky above the Scramble Crossing", "Shinjuku Gyoen garden",
        "Kamakura's Great Buddha and seaside temples (1 h by JR)",
        ("a bowl of ramen", "sushi at a counter bar", "yakitori under the railway arches in Yurakucho"),
        "a Suica or Pasmo card covers metro, JR trains and convenience stores"),
    "Paris": CityGuide(
        "the Marais", "the Eiffel Tower and the Champ de Mars", "the Louvre (book a timed entry)",
        "the Marché des Enfants Rouges", "Montmartre and the Sacré-Cœur steps", "the Jardin du Luxembourg",
        "Versailles (40 min by RER C)",
        ("a jambon-beurre from a boulangerie", "steak-frites in a bistro", "a crêpe in Saint-Germain"),
        "the Métro is fastest; a Navigo Easy card saves queuing for tickets"),
    "London": CityGuide(
        "the South Bank from Westminster to Tower Bridge", "the Tower of London", "the British Museum (free)",
        "Borough Market", "Primrose Hill or the Sky Garden (free, book ahead)", "Hyde Park and Kensington Gardens",
        "Greenwich by Thames Clipper boat",
        ("fish and chips", "a curry on Brick Lane", "afternoon tea with scones"),
        "tap a contactless card on the Tube and buses; daily fares are capped"),
    "New York": CityGuide(
        "Greenwich Village and SoHo", "the Statue of Liberty ferry from Battery Park",
        "the Metropolitan Museum of Art", "Chelsea Market", "the Top of the Rock", "Central Park",
        "a walk across the Brooklyn Bridge to DUMBO",
        ("pastrami on rye at a deli", "pizza in a classic coal-oven pizzeria", "a bagel with lox"),
        "the subway runs all night; tap a contactless card at the OMNY readers"),
    "Rome": CityGuide(
        "the Centro Storico: the Pantheon, Piazza Navona and the Trevi Fountain",
        "the Colosseum and the Roman Forum (timed tickets)", "the Vatican Museums and the Sistine Chapel",
        "Mercato Testaccio", "the Giardino degli Aranci on the Aventine", "Villa Borghese",
        "Ostia Antica (35 min by train)",
        ("supplì from a friggitoria", "cacio e pepe in a trattoria", "gelato"),
        "the centre is walkable; buses and the Metro take contactless cards"),
    "Barcelona": CityGuide(
        "the Gothic Quarter and El Born", "the Sagrada Família (book ahead)", "the Picasso Museum",
        "La Boqueria", "Park Güell", "Parc de la Ciutadella",
        "Montserrat monastery (1 h by train and rack railway)",
        ("tapas at a bar counter", "paella by the beach in Barceloneta", "churros with chocolate"),
        "the Metro is quick; a T-casual card covers ten rides"),
    "Sydney": CityGuide(
        "The Rocks", "the Opera House and the Harbour Bridge", "the Art Gallery of New South Wales",
        "the Sydney Fish Market", "Mrs Macquarie's Chair", "the Royal Botanic Garden",
        "the Blue Mountains (2 h by train)",
        ("fish and chips at Watsons Bay", "Thai food in Haymarket", "a flat white and a lamington"),
        "tap on and off ferries, trains and buses with a contactless or Opal card"),
    "Kyoto": CityGuide(
        "Higashiyama and the lanes up to Kiyomizu-dera", "Fushimi Inari's thousand gates (go early)",
        "the Kyoto National Museum", "Nishiki Market", "the Kiyomizu-dera terrace", "the Arashiyama bamboo grove",
        "Nara's temples and deer (45 min by train)",
        ("yudofu (simmered tofu)", "a kaiseki dinner", "matcha sweets"),
        "buses get crowded; mix the subway, JR trains and walking, and carry an IC card"),
    "Lisbon": CityGuide(
        "Alfama", "Belém Tower and the Jerónimos Monastery", "the Gulbenkian Museum", "the Time Out Market",
        "the Miradouro da Graça", "the Estrela Garden", "Sintra's palaces (40 min by train)",
        ("a bifana pork sandwich", "grilled sardines", "pastéis de nata"),
        "the hills are steep: use trams 28 and 12, the funiculars and a Viva Viagem card"),
    "Amsterdam": CityGuide(
        "the Jordaan and the canal ring", "the Anne Frank House (tickets open weeks ahead)", "the Rijksmuseum",
        "the Albert Cuyp Market", "the A'DAM Lookout", "the Vondelpark", "Zaanse Schans windmills (20 min by train)",
        ("a herring sandwich from a fish stall", "an Indonesian rijsttafel", "a warm stroopwafel"),
        "trams and bikes; tap a contactless card on trams and mind the bike lanes"),
    "Berlin": CityGuide(
        "Mitte and Museum Island", "the Brandenburg Gate and the Reichstag dome (free, book ahead)",
        "the Pergamon and Neues Museum", "Markthalle Neun", "the TV Tower", "the Tiergarten",
        "Potsdam's Sanssouci palace (40 min by S-Bahn)",
        ("a döner kebab", "schnitzel in an old Berlin pub", "currywurst"),
        "a day ticket covers U-Bahn, S-Bahn, trams and buses; validate it before boarding"),
    "Singapore": CityGuide(
        "Chinatown and Kampong Glam", "Gardens by the Bay", "the National Gallery", "the Lau Pa Sat hawker centre",
        "the Marina Bay Sands SkyPark", "the Botanic Gardens", "Sentosa island",
        ("Hainanese chicken rice", "chilli crab", "laksa"),
        "the MRT is air-conditioned and spotless; tap a contactless card"),
    "Istanbul": CityGuide(
        "Sultanahmet", "Hagia Sophia and the Blue Mosque (dress modestly)", "Topkapı Palace",
        "the Grand Bazaar and the Spice Bazaar", "Galata Tower", "Gülhane Park",
        "a Bosphorus ferry to Kadıköy on the Asian side",
        ("a simit from a street cart", "meze and grilled fish in a meyhane", "baklava with Turkish tea"),
        "an Istanbulkart covers trams, ferries and the metro"),
    "Cape Town": CityGuide(
        "Bo-Kaap and the city centre", "Table Mountain (cableway, weather permitting)", "Zeitz MOCAA",
        "the V&A Waterfront Food Market", "Signal Hill at sunset", "Kirstenbosch Botanical Garden",
        "the Cape Peninsula and the Boulders Beach penguins",
        ("a Cape Malay curry in Bo-Kaap", "a braai or fresh seafood", "koeksisters"),
        "use registered ride-hailing or the MyCiTi bus, and avoid walking alone at night"),
    "Reykjavik": CityGuide(
        "the old harbour and Laugavegur", "Hallgrímskirkja church", "the National Museum of Iceland",
        "the Hlemmur Mathöll food hall", "the Hallgrímskirkja tower", "Tjörnin lake",
        "the Golden Circle: Þingvellir, Geysir and Gullfoss",
        ("lamb soup", "the catch of the day", "a hot dog from Bæjarins Beztu"),
        "the centre is walkable; book countryside tours with hotel pick-up"),
    "Dubai": CityGuide(
        "Al Fahidi and the Creek (cross by abra boat)", "the Burj Khalifa", "the Museum of the Future",
        "the Gold and Spice Souks", "At the Top, Burj Khalifa", "the Dubai Marina walk", "a desert safari",
        ("shawarma", "Emirati machboos", "karak tea"),
        "the Metro with a Nol card; taxis are inexpensive"),
    "San Francisco": CityGuide(
        "North Beach and Chinatown", "the Golden Gate Bridge", "SFMOMA", "the Ferry Building Marketplace",
        "Twin Peaks", "Golden Gate Park", "Alcatraz (book days ahead)",
        ("clam chowder in a sourdough bowl", "dim sum in Chinatown", "a Mission burrito"),
        "cable cars, Muni and BART; tap a Clipper or contactless card"),
    "Bangkok": CityGuide(
        "Rattanakosin", "the Grand Palace and Wat Pho (cover shoulders and knees)", "Jim Thompson House",
        "Chatuchak market", "the Golden Mount", "Lumphini Park", "Ayutthaya's temple ruins (1.5 h)",
        ("pad thai", "som tam and grilled chicken", "mango sticky rice"),
        "the BTS Skytrain and the river boats beat the traffic"),
    "Vienna": CityGuide(
        "the Innere Stadt around St Stephen's Cathedral", "Schönbrunn Palace", "the Kunsthistorisches Museum",
        "the Naschmarkt", "the Kahlenberg", "the Prater", "the Wachau valley (1 h)",
        ("a sausage from a Würstelstand", "Wiener schnitzel", "Sachertorte"),
        "a 24, 48 or 72-hour ticket covers U-Bahn, trams and buses"),
    "Prague": CityGuide(
        "the Old Town Square and the Astronomical Clock", "Prague Castle", "the Jewish Museum in Josefov",
        "Manifesto Market", "the Letná Park beer garden", "Petřín Hill", "Kutná Hora (1 h by train)",
        ("svíčková", "goulash with a Czech pilsner", "trdelník"),
        "trams cover everything; buy a 24 or 72-hour ticket and validate it"),
}


def guide_for(destination: str) -> CityGuide:
    """The city's highlights, or generic ones that read naturally for any place."""
    if guide := GUIDES.get(canonical_city(destination) or ""):
        return guide
    return CityGuide(
        f"the historic centre of {destination}", "the best-known landmark", "the main museum",
        "the central market", "the highest viewpoint in town", "the largest park",
        "a nearby town or nature spot (ask at the tourist office)",
        ("the regional speciality", "a dish the locals recommend", "something sweet from a bakery"),
        "public transport and walking; ask your hotel which ticket suits a visitor best")
