#!/usr/bin/env python3
"""Generate the deterministic seed CSVs of the larder_demo dbt project.

Standard library only. A fixed random seed and fixed iteration orders make every
run produce byte-identical files, so the CSVs under seeds/ are committed and this
script is only rerun after changing it:

    python dbt_project/scripts/generate_seeds.py          # writes dbt_project/seeds/*.csv
    python dbt_project/scripts/generate_seeds.py --check  # exits 1 if the committed files differ

The data describes a small music-streaming service as of 2023-01-15 (AS_OF): users,
artists, 90 days of listens, concerts, album releases, payments and churn scores.

User 12345 (Jane Doe) is hand-crafted so that the customer_profiles model yields the
reference payload: 813 listens, top genres house > techno > ambient, top artists
deadmau5 > Marsh > Enamour, two San Francisco concerts (Aphex Twin 2023-01-31,
Sultan + Shepard 2023-02-25) and the upcoming release "Universal Language" by
Simon Doty. Randomly generated concerts and releases are kept out of the date
ranges that would displace those rows (see _conflicts_with_jane_*), so the
result is produced by the real recommendation SQL, not special-cased.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

SEED = 20230115
AS_OF = datetime(2023, 1, 15)  # snapshot moment: listens fall in [AS_OF - 90 days, AS_OF)
AS_OF_DATE = AS_OF.date()
WINDOW_DAYS = 90

SEEDS_DIR = Path(__file__).resolve().parent.parent / "seeds"

FIRST_USER_ID = 11801
NUM_USERS = 1250  # user ids 11801..13050, which includes Jane's 12345
JANE_ID = 12345

# genre -> artists. Jane's reference payload names deadmau5, Marsh, Enamour, Aphex Twin,
# Sultan + Shepard and Simon Doty; the rest make a plausible catalogue (~150 artists).
GENRES: dict[str, list[str]] = {
    "house": ["deadmau5", "Marsh", "Enamour", "Sultan + Shepard", "Simon Doty", "Lane 8",
              "Yotto", "Eli & Fur", "Nora En Pure", "Kasablanca", "Tinlicker", "Jody Wisternoff"],
    "techno": ["Charlotte de Witte", "Amelie Lens", "Adam Beyer", "Richie Hawtin", "Nina Kraviz",
               "Jeff Mills", "Ben Klock", "Tale Of Us", "Stephan Bodzin", "Kobosil",
               "Enrico Sangiuliano"],
    "ambient": ["Aphex Twin", "Brian Eno", "Tycho", "Boards of Canada", "Jon Hopkins", "Helios",
                "Hammock", "Stars of the Lid", "Carbon Based Lifeforms", "Loscil",
                "William Basinski"],
    "trance": ["Above & Beyond", "Armin van Buuren", "Paul van Dyk", "Ferry Corsten",
               "Gareth Emery", "Cosmic Gate", "Andrew Rayel", "Aly & Fila", "Markus Schulz",
               "Tiesto"],
    "drum and bass": ["Pendulum", "Sub Focus", "Netsky", "Chase & Status", "Wilkinson",
                      "Camo & Krooked", "Andy C", "Dimension", "Hybrid Minds", "Calibre", "Goldie"],
    "hip hop": ["Kendrick Lamar", "Run the Jewels", "Little Simz", "J. Cole", "Nas", "Common",
                "Mos Def", "Denzel Curry", "JID", "Freddie Gibbs", "Noname"],
    "indie rock": ["Arctic Monkeys", "The Strokes", "Vampire Weekend", "Arcade Fire", "Interpol",
                   "Yeah Yeah Yeahs", "Phoenix", "Alvvays", "Big Thief", "The National", "Spoon",
                   "Beach House"],
    "pop": ["Dua Lipa", "Taylor Swift", "Harry Styles", "Lorde", "Carly Rae Jepsen", "Robyn",
            "Charli XCX", "Billie Eilish", "Olivia Rodrigo", "The Weeknd", "Lizzo"],
    "jazz": ["Kamasi Washington", "Robert Glasper", "Esperanza Spalding", "Snarky Puppy",
             "GoGo Penguin", "Christian Scott", "Nubya Garcia", "Shabaka Hutchings",
             "Makaya McCraven", "BadBadNotGood", "Brad Mehldau"],
    "classical": ["Max Richter", "Olafur Arnalds", "Nils Frahm", "Johann Johannsson",
                  "Ludovico Einaudi", "Hilary Hahn", "Yo-Yo Ma", "Hania Rani", "Joep Beving",
                  "Philip Glass", "Arvo Part"],
    "r&b": ["SZA", "Frank Ocean", "H.E.R.", "Daniel Caesar", "Jorja Smith", "Solange",
            "Kali Uchis", "Steve Lacy", "Snoh Aalegra", "Brent Faiyaz", "Jhene Aiko"],
    "metal": ["Metallica", "Mastodon", "Gojira", "Deftones", "Tool", "Opeth", "Ghost", "Slayer",
              "Converge", "Sleep", "Baroness"],
    "folk": ["Fleet Foxes", "Bon Iver", "Phoebe Bridgers", "Iron & Wine", "Sufjan Stevens",
             "Joanna Newsom", "First Aid Kit", "The Tallest Man on Earth", "Gregory Alan Isakov",
             "Laura Marling", "Nick Drake", "Hozier"],
    "disco": ["Purple Disco Machine", "Jungle", "Roisin Murphy", "Breakbot", "Parcels",
              "Kaytranada"],
}
# How popular each genre is as a user's favourite (relative weights, same order as GENRES).
GENRE_WEIGHTS = [14, 10, 7, 6, 6, 12, 11, 14, 5, 4, 8, 6, 6, 4]
# Genres whose catalogue has no release after AS_OF: users who only listen to these get
# no upcoming_album_release.
NO_UPCOMING_RELEASES = ["classical", "folk", "metal"]
# Genres of Jane's top three; random concerts/releases in them avoid Jane's reference window.
JANE_GENRES = ["house", "techno", "ambient"]

LABELS: dict[str, list[str]] = {
    "house": ["Anjunadeep", "mau5trap", "Armada", "This Never Happened", "Colorize"],
    "techno": ["Drumcode", "Afterlife", "KNTXT", "Minus", "Ostgut Ton"],
    "ambient": ["Warp", "Ghostly International", "Kranky", "12k", "Opal Tapes"],
    "trance": ["Anjunabeats", "Armada", "Black Hole", "Coldharbour"],
    "drum and bass": ["Hospital Records", "RAM Records", "UKF", "Metalheadz"],
    "hip hop": ["Top Dawg", "Dreamville", "Jewel Runners", "Loma Vista", "Age 101"],
    "indie rock": ["Domino", "Sub Pop", "4AD", "Matador", "XL Recordings"],
    "pop": ["Columbia", "Interscope", "Atlantic", "Republic", "Polydor"],
    "jazz": ["Blue Note", "Impulse!", "Brainfeeder", "International Anthem", "Edition"],
    "classical": ["Deutsche Grammophon", "Erased Tapes", "Decca", "Nonesuch", "ECM"],
    "r&b": ["RCA", "Top Dawg", "Def Jam", "Interscope", "Saint Records"],
    "metal": ["Relapse", "Nuclear Blast", "Reprise", "Century Media", "Deathwish"],
    "folk": ["Jagjaguwar", "Dead Oceans", "Secretly Canadian", "Partisan", "Nonesuch"],
    "disco": ["Ninja Tune", "XL Recordings", "Because Music", "Kitsune", "Sweat It Out"],
}

# (location as used by concerts and users.city, ISO country code, weight)
CITIES = [
    ("San Francisco, CA", "US", 9), ("New York, NY", "US", 10), ("Los Angeles, CA", "US", 8),
    ("Chicago, IL", "US", 6), ("Seattle, WA", "US", 4), ("Austin, TX", "US", 4),
    ("London, UK", "GB", 9), ("Manchester, UK", "GB", 3), ("Berlin, Germany", "DE", 7),
    ("Amsterdam, Netherlands", "NL", 5), ("Paris, France", "FR", 5), ("Toronto, Canada", "CA", 5),
    ("Melbourne, Australia", "AU", 4), ("Stockholm, Sweden", "SE", 3), ("Tokyo, Japan", "JP", 4),
    ("Sao Paulo, Brazil", "BR", 4),
]
PLANS = [("free", 50), ("premium", 38), ("family", 12)]
PLAN_PRICE_CENTS = {"free": 0, "premium": 999, "family": 1499}

FIRST_NAMES = [
    "Aaliyah", "Adam", "Aiden", "Alejandro", "Alice", "Amara", "Amelia", "Ana", "Andre", "Anika",
    "Arjun", "Ava", "Ben", "Bianca", "Bruno", "Camila", "Carlos", "Charlotte", "Chen", "Chloe",
    "Daniel", "David", "Diego", "Elena", "Eli", "Emma", "Ethan", "Fatima", "Felix", "Freya",
    "Gabriel", "Grace", "Hana", "Hannah", "Hugo", "Ibrahim", "Isabella", "Ivan", "Jack", "Jade",
    "James", "Jane", "Jasper", "Javier", "Jin", "Jonas", "Julia", "Kai", "Kenji", "Laila", "Leo",
    "Liam", "Lina", "Lucas", "Lucia", "Maya", "Mateo", "Mei", "Mia", "Mohammed", "Nadia", "Noah",
    "Nora", "Olivia", "Omar", "Oscar", "Priya", "Rafael", "Ravi", "Rosa", "Ruby", "Sam", "Sara",
    "Sofia", "Sven", "Tariq", "Theo", "Valentina", "Wei", "Yara", "Yusuf", "Zoe",
]
LAST_NAMES = [
    "Adams", "Ahmed", "Almeida", "Andersson", "Bailey", "Bauer", "Becker", "Brown", "Campbell",
    "Chen", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Gonzalez", "Green", "Hall",
    "Hansen", "Hernandez", "Ito", "Jansen", "Johnson", "Kim", "Kowalski", "Lee", "Lopez",
    "Martin", "Meyer", "Miller", "Moreau", "Muller", "Murphy", "Nakamura", "Nguyen", "Nielsen",
    "O'Brien", "Okafor", "Patel", "Perez", "Petrov", "Quinn", "Rossi", "Sanchez", "Santos",
    "Schmidt", "Silva", "Singh", "Smith", "Suzuki", "Tanaka", "Taylor", "Thompson", "Van Dijk",
    "Walker", "Wang", "Weber", "Williams", "Wilson", "Wong", "Yamamoto", "Young", "Zhang",
]
TITLE_WORDS_A = [
    "Silver", "Golden", "Quiet", "Electric", "Distant", "Midnight", "Endless", "Northern",
    "Hidden", "Open", "Broken", "Bright", "Slow", "Velvet", "Paper", "Glass", "Wild", "Lost",
    "Neon", "Second", "Echo", "Blue", "Secret", "Parallel",
]
TITLE_WORDS_B = [
    "Horizons", "Rivers", "Signals", "Gardens", "Frequencies", "Light", "Motion", "Tides",
    "Hearts", "Machines", "Lines", "Rooms", "Skies", "Seasons", "Currents", "Islands", "Dreams",
    "Patterns", "Waves", "Shapes", "Fields", "Stories", "Voices", "Circuits",
]

# --- Jane Doe (user 12345): the reference payload -------------------------------------------
JANE = {
    "user_id": JANE_ID, "full_name": "Jane Doe", "email": "jane.doe@example.com",
    "signup_date": date(2015, 2, 9), "city": "San Francisco, CA", "country": "US",
    "plan": "family",
}
# Listens in the 90-day window per artist: 813 in all. house 500 > techno 186 > ambient 109,
# deadmau5 171 > Marsh 148 > Enamour 119 > everyone else.
JANE_LISTENS = {
    "deadmau5": 171, "Marsh": 148, "Enamour": 119, "Lane 8": 40, "Yotto": 22,
    "Charlotte de Witte": 61, "Stephan Bodzin": 57, "Tale Of Us": 43, "Amelie Lens": 25,
    "Aphex Twin": 44, "Jon Hopkins": 38, "Tycho": 27,
    "Bon Iver": 9, "Robyn": 6, "Above & Beyond": 3,
}
JANE_LIFETIME_VALUE_CENTS = 149218
JANE_CHURN_RISK = "0.04"
# Concerts for the reference payload, plus distractors that the SQL must filter out.
JANE_CONCERTS = [
    ("Aphex Twin", "San Francisco, CA", date(2023, 1, 31)),        # recommended #1
    ("Sultan + Shepard", "San Francisco, CA", date(2023, 2, 25)),  # recommended #2
    ("Lane 8", "San Francisco, CA", date(2023, 3, 18)),            # 3rd match: cut by the limit of 2
    ("deadmau5", "San Francisco, CA", date(2022, 12, 10)),         # before AS_OF: past
    ("Robyn", "San Francisco, CA", date(2023, 1, 20)),             # pop: not one of Jane's top genres
    ("Aphex Twin", "London, UK", date(2023, 1, 22)),               # another city
]
JANE_RELEASE_WINDOW_END = date(2023, 4, 28)
JANE_RELEASES = [
    ("Simon Doty", "Universal Language", "Anjunadeep", date(2023, 4, 28)),  # the upcoming release
    ("Simon Doty", "Fading Away", "Anjunadeep", date(2022, 9, 16)),          # already released
    ("Lane 8", "Reviver", "This Never Happened", date(2023, 6, 2)),         # later than Simon Doty
    ("Dua Lipa", "Neon Hearts", "Warner", date(2023, 2, 10)),               # pop: not a top genre
]


def _conflicts_with_jane_concert(genre: str, location: str, event_date: date) -> bool:
    """Would a random concert outrank one of Jane's two recommended concerts?"""
    return (genre in JANE_GENRES and location == "San Francisco, CA"
            and AS_OF_DATE < event_date <= date(2023, 2, 25))


def _conflicts_with_jane_release(genre: str, release_date: date) -> bool:
    """Would a random release come before (or tie with) Jane's upcoming release?"""
    return genre in JANE_GENRES and AS_OF_DATE < release_date <= JANE_RELEASE_WINDOW_END


def _weighted(rng: random.Random, options: list[tuple]) -> tuple:
    return rng.choices(options, weights=[o[-1] for o in options], k=1)[0]


def _rand_date(rng: random.Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, (end - start).days))


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _months_between(start: date, end: date) -> list[date]:
    """First-of-month billing dates from the month after `start` up to `end`, on start's day."""
    day = min(start.day, 28)
    out, y, m = [], start.year, start.month
    while True:
        m += 1
        if m > 12:
            y, m = y + 1, 1
        d = date(y, m, day)
        if d >= end:
            return out
        out.append(d)


def generate() -> dict[str, list[list]]:
    rng = random.Random(SEED)

    # artists ----------------------------------------------------------------------------
    artists, artist_id, artist_genre = [], {}, {}
    for genre, names in GENRES.items():
        for name in names:
            aid = 101 + len(artists)
            artists.append([aid, name, genre])
            artist_id[name], artist_genre[name] = aid, genre
    by_genre = {g: [artist_id[n] for n in names] for g, names in GENRES.items()}
    genre_of = {aid: g for aid, _, g in artists}

    # users --------------------------------------------------------------------------------
    users, emails = [], set()
    emails.add(JANE["email"])
    user_meta = {}  # user_id -> dict(city, plan, signup)
    for uid in range(FIRST_USER_ID, FIRST_USER_ID + NUM_USERS):
        if uid == JANE_ID:
            u = JANE
        else:
            while True:
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                if (first, last) != ("Jane", "Doe"):
                    break
            base = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
            email = f"{base}@example.com"
            n = 2
            while email in emails:
                email = f"{base}{n}@example.com"
                n += 1
            emails.add(email)
            city, country, _ = _weighted(rng, CITIES)
            u = {
                "user_id": uid, "full_name": f"{first} {last}", "email": email,
                "signup_date": _rand_date(rng, date(2018, 1, 1), date(2023, 1, 10)),
                "city": city, "country": country, "plan": _weighted(rng, PLANS)[0],
            }
        users.append([u["user_id"], u["full_name"], u["email"], u["signup_date"].isoformat(),
                      u["city"], u["country"], u["plan"]])
        user_meta[uid] = u

    # listens ------------------------------------------------------------------------------
    window_start = AS_OF - timedelta(days=WINDOW_DAYS)
    window_seconds = WINDOW_DAYS * 86400
    genre_names = list(GENRES)
    raw_listens = []  # (listened_at, user_id, artist_id, seconds_played)
    listen_counts = {}

    def listen_time(recency_bias: float) -> datetime:
        # recency_bias > 1 skews towards AS_OF (active users), < 1 towards the window start
        frac = rng.random() ** (1.0 / recency_bias)
        return window_start + timedelta(seconds=int(frac * (window_seconds - 1)))

    for uid in range(FIRST_USER_ID, FIRST_USER_ID + NUM_USERS):
        if uid == JANE_ID:
            picks = [artist_id[name] for name, n in JANE_LISTENS.items() for _ in range(n)]
            bias = 1.0
        else:
            if rng.random() < 0.07:  # signed up but never listened in the window
                listen_counts[uid] = 0
                continue
            n = max(1, min(600, int(rng.gammavariate(1.4, 30))))
            favs = []
            for _ in range(rng.choice([1, 1, 2, 2, 2, 3])):
                g = rng.choices(genre_names, weights=GENRE_WEIGHTS, k=1)[0]
                if g not in favs:
                    favs.append(g)
            noise = rng.choice([0.0, 0.0, 0.05, 0.1, 0.2])
            # a few favourite artists per genre, with a skewed preference
            fav_artists = {g: rng.sample(by_genre[g], k=min(len(by_genre[g]), rng.randint(2, 6)))
                           for g in favs}
            genre_w = [rng.uniform(1, 4) for _ in favs]
            picks = []
            for _ in range(n):
                if rng.random() < noise:
                    picks.append(rng.choice(artists)[0])
                else:
                    g = rng.choices(favs, weights=genre_w, k=1)[0]
                    cands = fav_artists[g]
                    picks.append(rng.choices(cands, weights=[1 / (i + 1) for i in range(len(cands))], k=1)[0])
            bias = rng.choice([0.5, 1.0, 1.0, 1.5, 3.0])
        for aid in picks:
            secs = rng.randint(31, 420) if rng.random() > 0.12 else rng.randint(5, 30)
            raw_listens.append((listen_time(bias), uid, aid, secs))
        listen_counts[uid] = len(picks)
    raw_listens.sort()
    listens = [[i + 1, uid, aid, ts.strftime("%Y-%m-%d %H:%M:%S"), secs]
               for i, (ts, uid, aid, secs) in enumerate(raw_listens)]

    # concerts -----------------------------------------------------------------------------
    raw_concerts = [(artist_id[a], loc, d) for a, loc, d in JANE_CONCERTS]
    city_opts = [(c, w) for c, _, w in CITIES]
    while len(raw_concerts) < 700:
        aid = rng.choice(artists)[0]
        loc = _weighted(rng, city_opts)[0]
        d = _rand_date(rng, date(2022, 7, 1), date(2023, 7, 31))
        if _conflicts_with_jane_concert(genre_of[aid], loc, d):
            continue
        raw_concerts.append((aid, loc, d))
    raw_concerts.sort(key=lambda c: (c[2], c[0], c[1]))
    concerts = [[i + 1, aid, loc, d.isoformat()] for i, (aid, loc, d) in enumerate(raw_concerts)]

    # album releases -----------------------------------------------------------------------
    raw_releases = [(artist_id[a], t, lbl, d) for a, t, lbl, d in JANE_RELEASES]
    titles_used = {(r[0], r[1]) for r in raw_releases}
    while len(raw_releases) < 450:
        aid = rng.choice(artists)[0]
        g = genre_of[aid]
        end = date(2023, 1, 10) if g in NO_UPCOMING_RELEASES else date(2023, 12, 15)
        d = _rand_date(rng, date(2021, 6, 1), end)
        if _conflicts_with_jane_release(g, d):
            continue
        title = f"{rng.choice(TITLE_WORDS_A)} {rng.choice(TITLE_WORDS_B)}"
        if (aid, title) in titles_used:
            continue
        titles_used.add((aid, title))
        raw_releases.append((aid, title, rng.choice(LABELS[g]), d))
    raw_releases.sort(key=lambda r: (r[3], r[0], r[1]))
    releases = [[i + 1, aid, t, lbl, d.isoformat()] for i, (aid, t, lbl, d) in enumerate(raw_releases)]

    # payments -----------------------------------------------------------------------------
    raw_payments = []  # (paid_at, user_id, cents)
    for uid in range(FIRST_USER_ID, FIRST_USER_ID + NUM_USERS):
        u = user_meta[uid]
        if uid == JANE_ID:
            dates = _months_between(u["signup_date"], AS_OF_DATE)
            cents = [PLAN_PRICE_CENTS["family"]] * len(dates)
            rest = JANE_LIFETIME_VALUE_CENTS - sum(cents)
            assert rest > 0, rest
            # the remainder: two gift-card purchases
            gift = rest // 2
            cents += [gift, rest - gift]
            dates += [date(2019, 12, 14), date(2021, 12, 11)]
        else:
            price = PLAN_PRICE_CENTS[u["plan"]]
            if price:
                dates = _months_between(u["signup_date"], AS_OF_DATE)
                if rng.random() < 0.3:  # started on the free plan, upgraded later
                    dates = dates[rng.randint(0, len(dates)):]
                cents = [price] * len(dates)
            else:
                dates = []  # free users: maybe a past trial subscription and some one-offs
                months = _months_between(u["signup_date"], AS_OF_DATE)
                if months and rng.random() < 0.35:
                    start = rng.randint(0, len(months) - 1)
                    dates = months[start:start + rng.randint(1, 6)]
                cents = [999] * len(dates)
            for _ in range(rng.choice([0, 0, 0, 1, 2])):
                dates.append(_rand_date(rng, u["signup_date"], AS_OF_DATE - timedelta(days=1)))
                cents.append(rng.choice([499, 1000, 1500, 2500, 5000]))
        for d, c in zip(dates, cents):
            paid_at = datetime(d.year, d.month, d.day, rng.randint(0, 23), rng.randint(0, 59),
                               rng.randint(0, 59))
            raw_payments.append((paid_at, uid, c))
    raw_payments.sort()
    payments = [[i + 1, uid, _money(c), ts.strftime("%Y-%m-%d %H:%M:%S")]
                for i, (ts, uid, c) in enumerate(raw_payments)]

    # churn scores: lower for heavy listeners, higher for lapsed ones ----------------------
    churn = []
    for uid in range(FIRST_USER_ID, FIRST_USER_ID + NUM_USERS):
        if uid == JANE_ID:
            churn.append([uid, JANE_CHURN_RISK])
            continue
        n = listen_counts[uid]
        base = 0.85 if n == 0 else max(0.03, 0.6 - n / 250)
        score = min(0.99, max(0.01, base + rng.uniform(-0.15, 0.15)))
        churn.append([uid, f"{score:.2f}"])

    return {
        "users": [["user_id", "full_name", "email", "signup_date", "city", "country", "plan"], *users],
        "artists": [["artist_id", "name", "genre"], *artists],
        "listens": [["listen_id", "user_id", "artist_id", "listened_at", "seconds_played"], *listens],
        "concerts": [["concert_id", "artist_id", "location", "event_date"], *concerts],
        "album_releases": [["release_id", "artist_id", "title", "label", "release_date"], *releases],
        "payments": [["payment_id", "user_id", "amount", "paid_at"], *payments],
        "churn_scores": [["user_id", "churn_risk"], *churn],
    }


def render(rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SEEDS_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    args = parser.parse_args(argv)

    stale = []
    for name, rows in generate().items():
        path = args.out / f"{name}.csv"
        data = render(rows)
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path.name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{path.name}: {len(rows) - 1} rows, {len(data):,} bytes")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
