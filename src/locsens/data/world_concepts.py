"""Concept and noise tables of the simulated YFCC world (see :mod:`locsens.data.world`).

Everything here is plain data in a fixed order (tuples, never sets), so that the world built from it
is byte-identical under a seed. Concept names are common English words (GloVe 6B vocabulary);
local-language variants are the words a Spanish, French, German, Italian, Portuguese or Dutch
speaker writes for the same concept.

Location rules (``where`` of a concept): a tuple of conditions, the concept's affinity to a city is
the best of them. Conditions: ``"any"`` (no location dependence), ``"cold"``, ``"tropical"``,
``"temperate"`` (bands of |latitude|), ``"arid"`` and ``"alpine"`` (country / region lists below),
``"coast"`` / ``"inland"`` (coastline proxy), ``"cc:ES"`` (a country), ``"ct:AS"`` (a continent).
"""

from __future__ import annotations

# (name, where) -- the order sets each group's Zipf-like base frequency (earlier = more frequent)
INVARIANT = tuple(
    (name, ("any",))
    for name in (
        "food", "people", "flower", "sky", "cat", "dog", "car", "portrait", "tree", "night", "light",
        "clouds", "window", "door", "sign", "graffiti", "bicycle", "bus", "train", "bird", "horse",
        "child", "girl", "boy", "woman", "man", "concert", "music", "guitar", "dance", "sport",
        "football", "basketball", "tennis", "golf", "running", "museum", "sculpture", "statue", "painting",
        "book", "computer", "phone", "coffee", "tea", "beer", "wine", "cake", "bread", "cheese", "pizza",
        "pasta", "salad", "soup", "chocolate", "fruit", "apple", "tomato", "strawberry", "lemon", "egg",
        "kitchen", "restaurant", "bar", "cafe", "shop", "toy", "doll", "shoes", "dress", "hat", "glasses",
        "clock", "lamp", "chair", "table", "bed", "bottle", "cup", "candle", "balloon", "umbrella",
        "fountain", "garden", "park", "playground", "stairs", "roof", "tower", "parking", "airport",
        "airplane", "station", "mural", "shadow", "reflection", "silhouette", "smile", "eye", "hand",
        "face", "hair", "tattoo", "insect", "butterfly", "bee", "spider", "rabbit", "mouse", "fire",
        "fireworks", "skateboard", "texture", "pattern", "abstract", "vintage", "fashion", "truck",
        "motorcycle", "cow", "sheep", "chicken", "duck", "rose", "sunflower", "grass", "rain", "moon",
        "stars", "sunset", "sunrise", "street", "building", "house", "road", "bridge", "market", "boat",
        "flag", "crowd", "parade", "festival", "protest", "police", "soldier", "cemetery", "library",
        "school", "university", "hospital", "factory", "office", "hotel", "pool", "wedding",
    )
)

CLIMATE = (
    ("snow", ("cold", "alpine")), ("ski", ("alpine",)), ("ice", ("cold",)), ("winter", ("cold", "temperate")),
    ("glacier", ("alpine",)), ("snowboard", ("alpine",)), ("frost", ("cold",)), ("snowman", ("cold",)),
    ("sled", ("cold",)), ("reindeer", ("cc:NO", "cc:SE", "cc:FI", "cc:RU", "cc:IS")), ("aurora", ("cold",)),
    ("icicle", ("cold",)), ("fjord", ("cc:NO", "cc:IS", "cc:NZ")), ("husky", ("cold",)), ("pine", ("cold", "alpine")),
    ("penguin", ("cc:AQ", "cc:NZ", "cc:ZA", "cc:CL", "cc:AR")),
    ("palm", ("tropical",)), ("tropical", ("tropical",)), ("jungle", ("tropical",)), ("parrot", ("tropical",)),
    ("coconut", ("tropical",)), ("hammock", ("tropical",)), ("orchid", ("tropical",)), ("mango", ("tropical",)),
    ("papaya", ("tropical",)), ("rainforest", ("tropical",)), ("monsoon", ("tropical",)), ("hibiscus", ("tropical",)),
    ("gecko", ("tropical",)), ("iguana", ("tropical",)), ("volcano", ("cc:ID", "cc:JP", "cc:IS", "cc:PH", "cc:EC", "cc:GT", "cc:CR")),
    ("desert", ("arid",)), ("dunes", ("arid",)), ("cactus", ("arid", "cc:MX")), ("camel", ("arid",)),
    ("oasis", ("arid",)), ("canyon", ("arid",)), ("sandstorm", ("arid",)), ("lizard", ("arid", "tropical")),
    ("scorpion", ("arid",)), ("salt", ("cc:BO", "cc:CL")),
    ("autumn", ("temperate",)), ("leaves", ("temperate",)), ("blossom", ("temperate",)), ("maple", ("temperate",)),
    ("squirrel", ("temperate",)), ("deer", ("temperate",)), ("tulip", ("temperate",)), ("chestnut", ("temperate",)),
)

COAST = (
    ("beach", ("coast",)), ("sea", ("coast",)), ("ocean", ("coast",)), ("harbor", ("coast",)),
    ("sailboat", ("coast",)), ("lighthouse", ("coast",)), ("pier", ("coast",)), ("surf", ("coast",)),
    ("seagull", ("coast",)), ("waves", ("coast",)), ("coast", ("coast",)), ("cliff", ("coast",)),
    ("shell", ("coast",)), ("seafood", ("coast",)), ("lobster", ("coast",)), ("crab", ("coast",)),
    ("dolphin", ("coast",)), ("island", ("coast",)), ("port", ("coast",)), ("marina", ("coast",)),
    ("yacht", ("coast",)), ("ferry", ("coast",)), ("bay", ("coast",)), ("promenade", ("coast",)),
    ("lake", ("inland",)), ("river", ("inland",)), ("mountain", ("inland",)), ("forest", ("inland",)),
    ("hills", ("inland",)), ("valley", ("inland",)), ("farm", ("inland",)), ("field", ("inland",)),
    ("meadow", ("inland",)), ("canoe", ("inland",)), ("waterfall", ("inland",)), ("hiking", ("inland",)),
    ("trail", ("inland",)), ("barn", ("inland",)), ("tractor", ("inland",)),
)

_MIDEAST = ("cc:SA", "cc:AE", "cc:QA", "cc:KW", "cc:OM", "cc:BH", "cc:YE", "cc:IQ", "cc:SY", "cc:JO",
            "cc:LB", "cc:EG", "cc:MA", "cc:DZ", "cc:TN", "cc:LY", "cc:IR", "cc:TR", "cc:PK")
_EAST_ASIA = ("cc:CN", "cc:JP", "cc:KR", "cc:TW", "cc:HK")
_SOUTH_ASIA = ("cc:IN", "cc:NP", "cc:LK", "cc:BD")
_SE_ASIA = ("cc:TH", "cc:VN", "cc:KH", "cc:LA", "cc:MM", "cc:ID", "cc:MY", "cc:PH")
_LATAM = ("ct:SA", "cc:MX", "cc:GT", "cc:CR", "cc:CU", "cc:PA")
_ORTHODOX = ("cc:RU", "cc:UA", "cc:BY", "cc:GR", "cc:RS", "cc:BG", "cc:RO", "cc:GE")

REGIONAL = (
    ("temple", ("ct:AS",)), ("buddha", ("ct:AS",)), ("monk", ("ct:AS",)), ("rice", ("ct:AS",)),
    ("noodles", ("ct:AS",)), ("lantern", ("ct:AS",)), ("pagoda", _EAST_ASIA), ("dragon", _EAST_ASIA),
    ("dumplings", _EAST_ASIA), ("calligraphy", _EAST_ASIA), ("sushi", ("cc:JP",)), ("shrine", ("cc:JP",)),
    ("geisha", ("cc:JP",)), ("kimono", ("cc:JP",)), ("ramen", ("cc:JP",)), ("panda", ("cc:CN",)),
    ("hindu", _SOUTH_ASIA), ("sari", _SOUTH_ASIA), ("curry", _SOUTH_ASIA), ("rickshaw", _SOUTH_ASIA),
    ("turban", _SOUTH_ASIA), ("yoga", _SOUTH_ASIA), ("spices", _SOUTH_ASIA + _MIDEAST),
    ("stupa", _SE_ASIA), ("scooter", _SE_ASIA), ("durian", _SE_ASIA), ("monkey", _SE_ASIA + _SOUTH_ASIA),
    ("paddy", _SE_ASIA),
    ("mosque", _MIDEAST), ("minaret", _MIDEAST), ("bazaar", _MIDEAST), ("souk", _MIDEAST),
    ("hookah", _MIDEAST), ("hijab", _MIDEAST), ("kebab", _MIDEAST), ("falafel", _MIDEAST),
    ("bullfight", ("cc:ES", "cc:MX")), ("bullring", ("cc:ES", "cc:MX")), ("matador", ("cc:ES", "cc:MX")),
    ("flamenco", ("cc:ES",)), ("paella", ("cc:ES",)), ("tapas", ("cc:ES",)), ("sangria", ("cc:ES",)),
    ("taco", ("cc:MX",)), ("sombrero", ("cc:MX",)), ("mariachi", ("cc:MX",)), ("tequila", ("cc:MX",)),
    ("pyramid", ("cc:MX", "cc:EG")), ("ruins", ("cc:IT", "cc:GR", "cc:MX", "cc:EG", "cc:TR", "cc:PE")),
    ("gondola", ("cc:IT",)), ("vespa", ("cc:IT",)), ("espresso", ("cc:IT",)), ("gelato", ("cc:IT",)),
    ("baguette", ("cc:FR",)), ("croissant", ("cc:FR",)), ("lavender", ("cc:FR",)),
    ("vineyard", ("cc:FR", "cc:IT", "cc:ES", "cc:PT", "cc:AR", "cc:CL", "cc:ZA")),
    ("windmill", ("cc:NL", "cc:BE", "cc:DK")), ("canal", ("cc:NL", "cc:BE")), ("clogs", ("cc:NL",)),
    ("pub", ("cc:GB", "cc:IE")), ("rugby", ("cc:GB", "cc:IE", "cc:NZ", "cc:ZA")), ("cricket", ("cc:GB", "cc:IN", "cc:AU", "cc:PK")),
    ("pretzel", ("cc:DE", "cc:AT")), ("oktoberfest", ("cc:DE",)),
    ("cathedral", ("ct:EU",)), ("castle", ("ct:EU",)), ("palace", ("ct:EU",)), ("abbey", ("ct:EU",)),
    ("medieval", ("ct:EU",)), ("cobblestone", ("ct:EU",)), ("tram", ("ct:EU",)), ("steeple", ("ct:EU",)),
    ("church", ("ct:EU", "ct:NA", "ct:SA")),
    ("baseball", ("cc:US", "cc:JP", "cc:CU")), ("cowboy", ("cc:US",)), ("rodeo", ("cc:US",)), ("diner", ("cc:US",)),
    ("pickup", ("cc:US",)), ("halloween", ("cc:US", "cc:CA")), ("thanksgiving", ("cc:US",)), ("bison", ("cc:US", "cc:CA")),
    ("moose", ("cc:CA", "cc:SE", "cc:NO")), ("bear", ("cc:CA", "cc:US", "cc:RU")), ("hockey", ("cc:CA", "cc:SE", "cc:FI")),
    ("skyscraper", ("cc:US", "cc:CN", "cc:HK", "cc:AE", "cc:SG")),
    ("carnival", ("cc:BR", "cc:CO", "cc:TT")), ("samba", ("cc:BR",)), ("favela", ("cc:BR",)),
    ("llama", ("cc:PE", "cc:BO", "cc:EC")), ("alpaca", ("cc:PE", "cc:BO")), ("inca", ("cc:PE",)),
    ("tango", ("cc:AR", "cc:UY")), ("gaucho", ("cc:AR", "cc:UY")), ("toucan", ("cc:BR", "cc:CR", "cc:PA")),
    ("salsa", _LATAM), ("safari", ("ct:AF",)), ("giraffe", ("ct:AF",)), ("zebra", ("ct:AF",)), ("lion", ("ct:AF",)),
    ("elephant", ("ct:AF", "cc:TH", "cc:LK")), ("rhino", ("ct:AF",)), ("savanna", ("ct:AF",)), ("hippo", ("ct:AF",)),
    ("baobab", ("ct:AF",)), ("antelope", ("ct:AF",)),
    ("kangaroo", ("cc:AU",)), ("koala", ("cc:AU",)), ("wallaby", ("cc:AU",)), ("kiwi", ("cc:NZ",)),
    ("outback", ("cc:AU",)), ("eucalyptus", ("cc:AU",)),
    ("orthodox", _ORTHODOX), ("icon", _ORTHODOX),
)

# Countries / (country, admin1 region) pairs whose cities count as arid or alpine.
ARID_COUNTRIES = ("SA", "AE", "QA", "KW", "OM", "BH", "YE", "IQ", "JO", "EG", "LY", "DZ", "NE", "ML", "TD",
                  "SD", "MR", "NA", "IL")
ARID_REGIONS = (("US", "Arizona"), ("US", "Nevada"), ("US", "New Mexico"), ("US", "Utah"), ("CL", "Antofagasta"),
                ("AU", "Northern Territory"), ("MA", "Souss-Massa-Draa"), ("IR", "Yazd"), ("CN", "Xinjiang Uygur Zizhiqu"))
ALPINE_COUNTRIES = ("CH", "AT", "NO", "AD", "LI", "SI")
ALPINE_REGIONS = (("US", "Colorado"), ("US", "Utah"), ("CA", "British Columbia"), ("FR", "Rhone-Alpes"),
                  ("IT", "Trentino-Alto Adige"), ("IT", "Aosta Valley"), ("DE", "Bavaria"), ("JP", "Nagano"))

# Look-alike groups: members share most of their visual prototype but live in different places,
# so only location tells them apart (the paper's "beach in Madrid" finds bullrings).
LOOK_ALIKES = (
    ("sand", ("beach", "bullring", "desert")),
    ("slope", ("ski", "dunes")),
    ("white_ground", ("snow", "salt")),
    ("spire", ("pagoda", "minaret", "steeple")),
    ("grazer", ("reindeer", "camel", "llama")),
    ("tree_crown", ("palm", "pine")),
    ("wild_animal", ("kangaroo", "deer", "antelope")),
    ("open_water", ("sea", "lake")),
    ("ursine", ("bear", "panda")),
    ("dome", ("cathedral", "mosque")),
    ("dancing_couple", ("flamenco", "tango", "samba")),
    ("dish", ("curry", "paella", "ramen")),
    ("headwear", ("sombrero", "turban")),
    ("small_boat", ("gondola", "canoe")),
    ("festival_crowd", ("carnival", "oktoberfest")),
)

# Concepts whose appearance depends on where they are (an offset per continent and per country).
REGIONAL_APPEARANCE = ("bridge", "temple", "house", "church", "market", "street", "building", "road", "boat", "food")

# Local-language tags: language code (first of the country's GeoNames languages) -> {concept: word}.
LOCAL_WORDS = (
    ("es", (("road", "carretera"), ("beach", "playa"), ("church", "iglesia"), ("market", "mercado"),
            ("bridge", "puente"), ("street", "calle"), ("sea", "mar"), ("river", "rio"), ("cathedral", "catedral"),
            ("castle", "castillo"), ("dog", "perro"), ("cat", "gato"), ("food", "comida"), ("flower", "flor"),
            ("house", "casa"), ("lake", "lago"), ("snow", "nieve"), ("mountain", "sierra"), ("park", "parque"))),
    ("fr", (("road", "route"), ("beach", "plage"), ("church", "église"), ("market", "marché"), ("bridge", "pont"),
            ("street", "rue"), ("sea", "mer"), ("castle", "château"), ("cathedral", "cathédrale"), ("cat", "chat"),
            ("dog", "chien"), ("flower", "fleur"), ("house", "maison"), ("lake", "lac"), ("mountain", "montagne"))),
    ("de", (("road", "strasse"), ("beach", "strand"), ("church", "kirche"), ("market", "markt"), ("bridge", "brücke"),
            ("castle", "schloss"), ("dog", "hund"), ("cat", "katze"), ("flower", "blume"), ("house", "haus"),
            ("mountain", "berg"), ("snow", "schnee"), ("garden", "garten"))),
    ("it", (("road", "strada"), ("beach", "spiaggia"), ("church", "chiesa"), ("market", "mercato"), ("bridge", "ponte"),
            ("sea", "mare"), ("castle", "castello"), ("cat", "gatto"), ("dog", "cane"), ("flower", "fiore"),
            ("lake", "lago"), ("house", "casa"))),
    ("pt", (("road", "estrada"), ("beach", "praia"), ("church", "igreja"), ("market", "mercado"), ("bridge", "ponte"),
            ("street", "rua"), ("sea", "mar"), ("cat", "gato"), ("lake", "lago"), ("house", "casa"))),
    ("nl", (("beach", "strand"), ("church", "kerk"), ("bridge", "brug"), ("canal", "gracht"), ("market", "markt"),
            ("street", "straat"))),
)

# Country names as locals write them (a place-name variant that is not in the geocoder's list).
LOCAL_COUNTRY_NAMES = (("ES", "España"), ("DE", "Deutschland"), ("IT", "Italia"), ("MX", "México"), ("BR", "Brasil"),
                       ("NL", "Nederland"), ("AT", "Österreich"), ("CH", "Schweiz"), ("PE", "Perú"), ("JP", "Nippon"))

# Famous tourist destinations (GeoNames names as the geocoder writes them): an attractiveness boost.
TOURIST_CITIES = (
    "Paris", "London", "New York City", "Rome", "Barcelona", "Tokyo", "Bangkok", "Istanbul", "Dubai", "Sydney",
    "Amsterdam", "Venice", "Florence", "Prague", "Vienna", "Berlin", "Madrid", "Lisbon", "San Francisco",
    "Los Angeles", "Las Vegas", "Chicago", "Washington, D.C.", "Kyoto", "Hong Kong", "Singapore", "Seoul", "Beijing",
    "Shanghai", "Rio de Janeiro", "Buenos Aires", "Mexico City", "Cancun", "Havana", "Cairo", "Marrakesh",
    "Cape Town", "Athens", "Dublin", "Edinburgh", "Budapest", "Moscow", "Saint Petersburg", "Vancouver", "Toronto",
    "Montreal", "Miami", "Honolulu", "Melbourne", "Auckland", "Seville", "Granada", "Nice", "Munich", "Zurich",
    "Copenhagen", "Stockholm", "Oslo", "Reykjavik", "Jerusalem", "Delhi", "Mumbai", "Agra", "Kathmandu", "Hanoi",
    "Ho Chi Minh City", "Bali", "Denpasar", "Cusco", "Lima", "Santiago", "Queenstown", "Naples", "Milan", "Krakow",
)

# Relative share of Flickr users per continent of home (YFCC100M is mostly North America and Europe).
FLICKR_USAGE = (("NA", 1.0), ("EU", 1.0), ("OC", 0.8), ("SA", 0.25), ("AS", 0.12), ("AF", 0.05), ("AN", 0.0))
FLICKR_USAGE_COUNTRY = (("MX", 0.25), ("GT", 0.25), ("CU", 0.25), ("HN", 0.25), ("SV", 0.25), ("NI", 0.25),
                        ("HT", 0.1), ("DO", 0.25), ("JP", 0.5), ("KR", 0.3), ("TW", 0.4), ("SG", 0.6),
                        ("HK", 0.6), ("IL", 0.6), ("RU", 0.4), ("CN", 0.04), ("IN", 0.08))

# Large coastal cities (geocoder names; matched when population >= 300k) that the town-cloud coast proxy
# misses because their surroundings are dense (bays, estuaries, headlands).
COASTAL_CITIES = (
    "New York City", "San Francisco", "Los Angeles", "San Diego", "Seattle", "Boston", "Miami", "Houston", "Tampa",
    "New Orleans", "Honolulu", "Vancouver", "Halifax", "Cancun", "Veracruz", "Acapulco", "Havana", "Panama",
    "Cartagena", "Caracas", "Lima", "Valparaiso", "Rio de Janeiro", "Salvador", "Recife", "Fortaleza", "Santos",
    "Florianopolis", "Montevideo", "Buenos Aires", "Mar del Plata", "Lisbon", "Porto", "Barcelona", "Valencia",
    "Malaga", "Cadiz", "Bilbao", "Nice", "Marseille", "Genoa", "Naples", "Venice", "Palermo", "Bari", "Athens",
    "Thessaloniki", "Istanbul", "Izmir", "Antalya", "Split", "Dubrovnik", "Amsterdam", "Rotterdam", "Copenhagen",
    "Stockholm", "Oslo", "Helsinki", "Tallinn", "Riga", "Gdansk", "Saint Petersburg", "Dublin", "Edinburgh",
    "Brighton", "Liverpool", "Reykjavik", "Tel Aviv", "Haifa", "Beirut", "Alexandria", "Casablanca", "Tunis",
    "Algiers", "Dakar", "Accra", "Lagos", "Mombasa", "Dar es Salaam", "Durban", "Cape Town", "Jeddah", "Dubai",
    "Abu Dhabi", "Doha", "Muscat", "Kuwait City", "Karachi", "Mumbai", "Chennai", "Colombo", "Bangkok",
    "Ho Chi Minh City", "Singapore", "Jakarta", "Manila", "Hong Kong", "Shenzhen", "Xiamen", "Shanghai",
    "Qingdao", "Tianjin", "Dalian", "Busan", "Incheon", "Kaohsiung", "Tokyo", "Yokohama", "Osaka", "Kobe",
    "Fukuoka", "Sydney", "Melbourne", "Brisbane", "Perth", "Adelaide", "Gold Coast", "Auckland", "Wellington",
)

# Noise: camera brands (device column, tags a user of that brand may add; digits are dropped by ingestion).
CAMERAS = (
    ("Canon", ("Canon EOS 5D Mark II", "Canon EOS 400D DIGITAL", "Canon PowerShot S95"), ("canon", "eos", "canon+eos+400d", "powershot")),
    ("Nikon", ("NIKON D700", "NIKON D90", "NIKON COOLPIX P7000"), ("nikon", "d700", "nikkor", "coolpix")),
    ("Apple", ("Apple iPhone 4S", "Apple iPhone 5"), ("iphone", "iphone4s", "iphoneography", "instagram")),
    ("Sony", ("SONY DSC-RX100", "SONY NEX-5N"), ("sony", "nex", "cybershot")),
    ("Olympus", ("OLYMPUS E-M5", "OLYMPUS PEN E-PL1"), ("olympus", "omd", "pen")),
    ("Panasonic", ("Panasonic DMC-ZS10", "Panasonic DMC-GF1"), ("panasonic", "lumix")),
    ("Fujifilm", ("FUJIFILM X100", "FUJIFILM FinePix S5700"), ("fujifilm", "fuji", "finepix")),
    ("Samsung", ("SAMSUNG GT-I9100",), ("samsung", "galaxy")),
    ("Pentax", ("PENTAX K-5",), ("pentax",)),
    ("Leica", ("LEICA M9",), ("leica",)),
)
PERSONAL = ("family", "vacation", "holiday", "friends", "trip", "travel", "kids", "me", "mom", "dad", "birthday",
            "party", "home", "weekend", "summer", "fun", "love", "cute", "holidays", "roadtrip", "honeymoon",
            "reunion", "grandma", "grandpa", "cousins", "daughter", "son", "sister", "brother", "uncle")
PET_NAMES = ("luna", "max", "bella", "charlie", "lucy", "milo", "oscar", "coco", "daisy", "rocky", "molly",
             "buddy", "simba", "leo", "loki", "nala", "teddy", "bailey", "toby", "chloe", "ginger", "pepper",
             "oliver", "tiger", "smokey", "shadow", "lola", "zoe", "ruby", "jack")
RANDOM_WORDS = (
    "photo", "picture", "beautiful", "nice", "colors", "blue", "red", "green", "yellow", "old", "new", "life",
    "day", "happy", "black", "white", "color", "colour", "photography", "digital", "view", "city",
    "urban", "nature", "landscape", "outdoor", "indoor", "detail", "closeup", "macro", "bokeh", "hdr",
    "panorama", "square", "explore", "flickr", "photoshop", "lightroom", "edit", "art",
    "pink", "purple", "orange", "brown", "gold", "silver", "bright", "dark", "morning", "evening", "afternoon",
    "spring", "memories", "moment", "time", "world", "peace", "quiet", "calm", "wild", "small", "big", "tiny",
    "huge", "tall", "long", "round", "soft", "sharp", "blur", "motion", "walk", "visit", "tour", "tourist",
    "tourism", "culture", "history", "historic", "heritage", "architecture", "design", "style", "classic",
    "modern", "ancient", "famous", "local", "public", "private", "free", "random", "misc", "stuff", "things",
    "cool", "awesome", "amazing", "wow", "funny", "weird", "strange", "lovely", "pretty", "sweet", "great",
)
DIGIT_TAGS = ("2005", "2006", "2007", "2008", "2009", "2010", "2011", "2012", "2013", "2014", "365", "365days",
              "100v10f", "img", "dsc")
LICENSES = (
    ("Attribution License", "http://creativecommons.org/licenses/by/2.0/"),
    ("Attribution-ShareAlike License", "http://creativecommons.org/licenses/by-sa/2.0/"),
    ("Attribution-NoDerivs License", "http://creativecommons.org/licenses/by-nd/2.0/"),
    ("Attribution-NonCommercial License", "http://creativecommons.org/licenses/by-nc/2.0/"),
    ("Attribution-NonCommercial-ShareAlike License", "http://creativecommons.org/licenses/by-nc-sa/2.0/"),
    ("Attribution-NonCommercial-NoDerivs License", "http://creativecommons.org/licenses/by-nc-nd/2.0/"),
)

CONCEPTS = INVARIANT + CLIMATE + COAST + REGIONAL
