"""classify(): UTM tags, click ids, then the referrer against Matomo's lists and Tessera's own hosts;
host_of(): the hand-rolled URL host parser. The medium table below is the acceptance set of issue 14."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from schemas.enriched import Traffic, TrafficSource
from schemas.events import Utm
from streams.core import traffic
from streams.core.traffic import classify, host_of

PAGE = "https://www.shop.example.de/p/123?color=red"
PAGE_GCLID = "https://www.shop.example.de/p/123?gclid=Cj0KCQjw"
PAGE_FBCLID = "https://www.shop.example.de/?fbclid=IwAR3x"


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("https://www.google.de/", ("search", "google")),
        ("https://www.google.com/search?q=schuhe", ("search", "google")),
        ("https://www.google.co.uk/", ("search", "google")),
        ("https://google.com.au/", ("search", "google")),
        ("https://www.bing.com/search?q=x", ("search", "bing")),
        ("https://cn.bing.com/", ("search", "bing")),
        ("https://duckduckgo.com/", ("search", "duckduckgo")),
        ("https://de.search.yahoo.com/search?p=x", ("search", "yahoo")),
        ("https://www.ecosia.org/search?q=x", ("search", "ecosia")),
        ("https://www.baidu.com/s?wd=x", ("search", "baidu")),
        ("https://yandex.ru/search/", ("search", "yandex")),
        ("https://www.qwant.com/?q=x", ("search", "qwant")),
        ("https://www.startpage.com/do/search", ("search", "startpage")),
        ("android-app://com.google.android.googlequicksearchbox/", ("search", "google")),
        ("https://l.facebook.com/l.php?u=x", ("social", "facebook")),
        ("https://m.facebook.com/", ("social", "facebook")),
        ("https://www.instagram.com/", ("social", "instagram")),
        ("https://t.co/AbCd", ("social", "twitter")),
        ("https://twitter.com/someone", ("social", "twitter")),
        ("https://x.com/someone", ("social", "twitter")),
        ("https://www.linkedin.com/feed/", ("social", "linkedin")),
        ("https://lnkd.in/abc", ("social", "linkedin")),
        ("https://www.pinterest.de/pin/1/", ("social", "pinterest")),
        ("https://www.tiktok.com/@shop", ("social", "tiktok")),
        ("https://out.reddit.com/t3_x", ("social", "reddit")),
        ("https://www.youtube.com/watch?v=x", ("social", "youtube")),
        ("https://youtu.be/x", ("social", "youtube")),
        ("https://web.whatsapp.com/", ("social", "whatsapp")),
        ("https://mail.google.com/mail/u/0/", ("email", "gmail")),
        ("https://outlook.live.com/mail/0/", ("email", "outlook")),
        ("https://outlook.office.com/", ("email", "outlook")),
        ("https://webmail.strato.de/", ("email", "strato")),  # named by provider, not by host
        ("https://mail.yahoo.com/", ("email", "yahoo mail")),
        ("https://deref-gmx.net/mail/client/x", ("email", "gmx")),
        ("android-app://com.google.android.gm/", ("email", "gmail")),
        ("https://www.heise.de/news/x.html", ("referral", "heise.de")),
        ("https://blog.example.org/post?id=1", ("referral", "blog.example.org")),
        ("https://docs.google.com/document/d/x", ("referral", "docs.google.com")),
        ("https://maps.google.de/", ("search", "google maps")),  # SearchEngines.yml: maps.google.{}
        ("https://www.shop.example.de/cart", ("internal", None)),
        ("https://shop.example.de/", ("internal", None)),
        ("https://checkout.shop.example.de/step/2", ("internal", None)),
        ("http://WWW.SHOP.EXAMPLE.DE:8080/x", ("internal", None)),
        ("", ("direct", None)),
        ("about:blank", ("direct", None)),
        (None, ("direct", None)),
    ],
)
def test_referrer_only(referrer: str | None, expected: tuple[str, str | None]) -> None:
    result = classify(referrer, None, PAGE)
    assert (result.source, result.name) == expected


def test_referrer_media_follow_ga_conventions() -> None:
    assert classify("https://www.google.de/", None, PAGE).medium == "organic"
    assert classify("https://t.co/x", None, PAGE).medium == "social"
    assert classify("https://www.heise.de/", None, PAGE).medium == "referral"
    assert classify(None, None, PAGE) == Traffic(source="direct")
    assert classify("https://www.shop.example.de/", None, PAGE) == Traffic(source="internal")


@pytest.mark.parametrize(
    ("utm", "expected"),
    [
        (
            Utm(source="Newsletter", medium="Email", campaign="Spring-24"),
            ("email", "newsletter", "email", "Spring-24"),
        ),
        (Utm(source="crm", medium="newsletter"), ("email", "crm", "newsletter", None)),
        (Utm(source="newsletter"), ("email", "newsletter", None, None)),
        (Utm(source="google", medium="cpc", campaign="brand"), ("campaign", "google", "cpc", "brand")),
        (Utm(source="bing", medium="ppc"), ("campaign", "bing", "ppc", None)),
        (Utm(source="facebook", medium="paid_social"), ("campaign", "facebook", "paid_social", None)),
        (Utm(source="gdn", medium="display"), ("campaign", "gdn", "display", None)),
        (Utm(source="partner", medium="campaign"), ("campaign", "partner", "campaign", None)),
        (Utm(source="partner", medium="paid"), ("campaign", "partner", "paid", None)),
        (Utm(campaign="summer_sale"), ("campaign", None, None, "summer_sale")),
        (
            Utm(source="facebook", medium="social", campaign="post-1"),
            ("social", "facebook", "social", "post-1"),
        ),
        (Utm(source="google", medium="organic"), ("search", "google", "organic", None)),
        (Utm(source="partnerblog", medium="referral"), ("referral", "partnerblog", "referral", None)),
        (Utm(source="flyer", medium="qr"), ("campaign", "flyer", "qr", None)),
    ],
)
def test_utm_wins_over_referrer(utm: Utm, expected: tuple[str, str | None, str | None, str | None]) -> None:
    result = classify("https://www.google.de/", utm, PAGE)
    assert (result.source, result.name, result.medium, result.campaign) == expected


def test_lone_unknown_medium_lets_the_referrer_decide() -> None:
    result = classify("https://duckduckgo.com/", Utm(medium="weird"), PAGE)
    assert (result.source, result.name, result.medium) == ("search", "duckduckgo", "weird")
    assert classify(None, Utm(medium="weird"), PAGE) == Traffic(source="direct", medium="weird")
    assert classify(PAGE, Utm(term="x", content="y"), PAGE) == Traffic(source="internal")


def test_utm_beats_internal_referrer() -> None:
    result = classify("https://www.shop.example.de/", Utm(source="newsletter", medium="email"), PAGE)
    assert result.source == "email"


def test_blank_utm_values_count_as_missing() -> None:
    assert classify(None, Utm(source="  ", medium="", campaign=" "), PAGE).source == "direct"


def test_no_page_url_means_no_internal() -> None:
    assert classify("https://www.shop.example.de/", None, None).source == "referral"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://www.google.de/", "www.google.de"),
        ("https://Example.COM./x", "example.com"),
        ("https://user:pw@host.de:8443/path?q#f", "host.de"),
        ("https://host.de?x=1", "host.de"),
        ("https://host.de#top", "host.de"),
        ("//cdn.example.net/a.js", "cdn.example.net"),
        ("http://[2001:db8::1]:8080/x", "2001:db8::1"),
        ("  https://padded.de/", "padded.de"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("about:blank", None),
        ("www.google.de", None),
        ("https:///nohost", None),
        ("", None),
    ],
)
def test_host_of(url: str, host: str | None) -> None:
    assert host_of(url) == host


def test_classification_is_cached_and_bounded() -> None:
    info = traffic.cache_info()
    assert info["referrer_host"]["maxsize"] == traffic.CACHE_SIZE == info["host_rules"]["maxsize"]
    assert all(stats["maxsize"] is not None for stats in info.values())
    classify("https://www.cache-probe.example/", None, PAGE)
    hits = traffic.cache_info()["referrer_host"]["hits"]
    first = classify("https://www.cache-probe.example/other", None, "https://www.shop.example.de/p/999")
    # a new URL on a known host: no new host lookup
    assert traffic.cache_info()["referrer_host"]["hits"] == hits + 1
    assert first is classify("https://www.cache-probe.example/", None, PAGE)  # same frozen instance
    traffic.cache_clear()
    assert {name: stats["currsize"] for name, stats in traffic.cache_info().items()} == dict.fromkeys(
        ("url_host", "host_rules", "referrer_host", "traffic", "utm"), 0
    )


# -- the medium table: real-looking referrers across every medium ---------------------------------
# (referrer, expected (medium, name, keyword)); the page is PAGE, no UTM tags.

SEARCH_CASES: list[tuple[str, tuple[str, str, str | None]]] = [
    # Google and its sections (SearchEngines.yml: google.{}, images.google.{}, google.{}/imgres, ...)
    ("https://www.google.com/", ("search", "google", None)),
    ("https://www.google.de/search?q=wanderschuhe+damen&hl=de", ("search", "google", "wanderschuhe damen")),
    ("https://www.google.ch/url?sa=t&rct=j&q=&esrc=s&source=web", ("search", "google", None)),
    ("https://www.google.co.uk/search?q=Running%20Shoes", ("search", "google", "running shoes")),
    ("https://www.google.com.au/", ("search", "google", None)),
    ("https://www.google.com.br/search?q=t%C3%AAnis", ("search", "google", "tênis")),
    ("https://www.google.co.jp/", ("search", "google", None)),
    ("https://google.fr/", ("search", "google", None)),
    ("https://www.google.at/#q=fahrrad", ("search", "google", "fahrrad")),
    ("https://encrypted.google.com/search?q=secure", ("search", "google", "secure")),
    ("https://images.google.de/", ("search", "google images", None)),
    ("https://images.google.com/imgres?imgurl=x&q=lamp", ("search", "google images", "lamp")),
    ("https://www.google.de/imgres?imgurl=https%3A%2F%2Fshop%2Fa.jpg", ("search", "google images", None)),
    ("https://www.google.com/search?q=red+vase&tbm=isch", ("search", "google images", "red vase")),
    ("https://www.google.com/search?q=unboxing&tbm=vid", ("search", "google video", "unboxing")),
    ("https://www.google.com/search?q=sneaker&tbm=shop", ("search", "google shopping", "sneaker")),
    ("https://news.google.com/articles/CBMi", ("search", "google news", None)),
    ("https://news.google.de/", ("search", "google news", None)),
    ("https://maps.google.de/maps?q=shop+berlin", ("search", "google maps", "shop berlin")),
    ("https://scholar.google.com/scholar?q=retail", ("search", "google scholar", "retail")),
    ("https://www.google.com/cse?cx=123&q=custom", ("search", "google custom search", "custom")),
    ("https://cse.google.de/cse?q=abc", ("search", "google custom search", "abc")),
    ("https://translate.google.com/", ("search", "google translations", None)),
    ("android-app://com.google.android.googlequicksearchbox/", ("search", "google", None)),
    ("android-app://com.google.android.googlequicksearchbox/https/www.google.com",
     ("search", "google", None)),
    # Bing (bing.com, {}.bing.com, bing.com/images/search)
    ("https://www.bing.com/search?q=laptop+tasche&form=QBLH", ("search", "bing", "laptop tasche")),
    ("https://www.bing.com/", ("search", "bing", None)),
    ("https://m.bing.com/search?q=handy", ("search", "bing", "handy")),
    ("https://cn.bing.com/search?q=shoes", ("search", "bing", "shoes")),
    ("https://de.bing.com/", ("search", "bing", None)),
    ("https://www.bing.com/images/search?q=sofa&form=HDRSC2", ("search", "bing images", "sofa")),
    ("https://www.bing.com/search?Q=Upper", ("search", "bing", "upper")),
    # Yahoo!
    ("https://de.search.yahoo.com/search?p=kopfh%C3%B6rer", ("search", "yahoo", "kopfhörer")),
    ("https://search.yahoo.com/search?p=jeans", ("search", "yahoo", "jeans")),
    ("https://uk.search.yahoo.com/", ("search", "yahoo", None)),
    ("https://malaysia.search.yahoo.com/search?p=x", ("search", "yahoo", "x")),
    ("https://images.search.yahoo.com/search/images?p=vase", ("search", "yahoo images", "vase")),
    ("https://search.yahoo.co.jp/search?p=kutsu", ("search", "yahoo japan", "kutsu")),
    # Yandex
    ("https://yandex.ru/search/?text=%D0%BA%D1%80%D0%BE%D1%81%D1%81%D0%BE%D0%B2%D0%BA%D0%B8",
     ("search", "yandex", "кроссовки")),
    ("https://yandex.com/search/?text=boots", ("search", "yandex", "boots")),
    ("https://yandex.com.tr/search/?text=ayakkabi", ("search", "yandex", "ayakkabi")),
    ("https://ya.ru/search/?text=lamp", ("search", "yandex", "lamp")),
    ("https://images.yandex.ru/search?text=cat", ("search", "yandex images", "cat")),
    ("https://m.yandex.ru/", ("search", "yandex", None)),
    # Baidu, Naver, Seznam, Sogou, 360
    ("https://www.baidu.com/s?wd=%E6%89%8B%E6%9C%BA", ("search", "baidu", "手机")),
    ("https://m.baidu.com/s?word=phone", ("search", "baidu", "phone")),
    ("https://baidu.com/", ("search", "baidu", None)),
    ("https://search.naver.com/search.naver?query=%EC%8B%A0%EB%B0%9C", ("search", "naver", "신발")),
    ("https://search.seznam.cz/?q=boty", ("search", "seznam", "boty")),
    ("https://www.sogou.com/web?query=shoes", ("search", "sogou", "shoes")),
    ("https://www.so.com/s?q=x", ("search", "360search", "x")),
    # privacy and alternative engines
    ("https://duckduckgo.com/", ("search", "duckduckgo", None)),
    ("https://duckduckgo.com/?q=rain+jacket&ia=web", ("search", "duckduckgo", "rain jacket")),
    ("https://www.ecosia.org/search?method=index&q=yoga+mat", ("search", "ecosia", "yoga mat")),
    ("https://www.qwant.com/?q=velo&t=web", ("search", "qwant", "velo")),
    ("https://lite.qwant.com/?q=livre", ("search", "qwant", "livre")),
    ("https://www.startpage.com/do/search", ("search", "startpage", None)),
    ("https://www.startpage.com/sp/search?query=privacy", ("search", "startpage", "privacy")),
    ("https://search.brave.com/search?q=hoodie&source=web", ("search", "brave", "hoodie")),
    ("https://kagi.com/search?q=kagi+test", ("search", "kagi", "kagi test")),
    ("https://www.mojeek.com/search?q=mojeek", ("search", "mojeek", "mojeek")),
    ("https://metager.de/meta/meta.ger3?eingabe=suche", ("search", "metager", "suche")),
    ("https://swisscows.com/web?query=uhr", ("search", "swisscows", "uhr")),
    # portals (AOL, Ask, Web.de, T-Online, Mail.ru)
    ("https://search.aol.com/aol/search?q=gift+ideas", ("search", "aol", "gift ideas")),
    ("https://www.ask.com/web?q=best+laptop&qsrc=0", ("search", "ask", "best laptop")),
    ("https://suche.web.de/web/result?q=jacke", ("search", "web.de", "jacke")),
    ("https://suche.t-online.de/fast-cgi/tsc?q=schuhe", ("search", "t-online", "schuhe")),
    ("https://go.mail.ru/search?q=kniga", ("search", "mailru", "kniga")),
    # the Google Search app on Android, ChatGPT-less engines...
    ("android-app://com.duckduckgo.mobile.android/", ("search", "duckduckgo", None)),
    ("android-app://com.microsoft.bing/", ("search", "bing", None)),
    ("android-app://com.ecosia.android/", ("search", "ecosia", None)),
]

SOCIAL_CASES: list[tuple[str, tuple[str, str, str | None]]] = [
    ("https://www.facebook.com/", ("social", "facebook", None)),
    ("https://www.facebook.com/search/?q=shop", ("social", "facebook", None)),
    ("https://m.facebook.com/story.php?id=1", ("social", "facebook", None)),
    ("https://l.facebook.com/l.php?u=https%3A%2F%2Fshop", ("social", "facebook", None)),
    ("https://lm.facebook.com/l.php?u=x", ("social", "facebook", None)),
    ("https://fb.me/abc", ("social", "facebook", None)),
    ("https://fb.watch/xyz/", ("social", "facebook", None)),
    ("https://www.messenger.com/t/1", ("social", "facebook messenger", None)),
    ("https://www.instagram.com/p/abc/", ("social", "instagram", None)),
    ("https://l.instagram.com/?u=https%3A%2F%2Fshop", ("social", "instagram", None)),
    ("https://t.co/AbCdEf", ("social", "twitter", None)),
    ("https://twitter.com/shop/status/1", ("social", "twitter", None)),
    ("https://mobile.twitter.com/shop", ("social", "twitter", None)),
    ("https://x.com/shop/status/1", ("social", "twitter", None)),
    ("https://www.linkedin.com/feed/", ("social", "linkedin", None)),
    ("https://lnkd.in/dXyZ", ("social", "linkedin", None)),
    ("https://de.linkedin.com/company/shop", ("social", "linkedin", None)),
    ("https://www.pinterest.com/pin/123/", ("social", "pinterest", None)),
    ("https://www.pinterest.de/pin/123/", ("social", "pinterest", None)),
    ("https://www.pinterest.com.au/pin/9/", ("social", "pinterest", None)),
    ("https://pin.it/4xYz", ("social", "pinterest", None)),
    ("https://www.tiktok.com/@shop/video/1", ("social", "tiktok", None)),
    ("https://vm.tiktok.com/ZMabc/", ("social", "tiktok", None)),
    ("https://www.reddit.com/r/deals/comments/1/", ("social", "reddit", None)),
    ("https://out.reddit.com/t3_x", ("social", "reddit", None)),
    ("https://old.reddit.com/r/x", ("social", "reddit", None)),
    ("https://www.youtube.com/watch?v=abc", ("social", "youtube", None)),
    ("https://m.youtube.com/watch?v=abc", ("social", "youtube", None)),
    ("https://youtu.be/abc", ("social", "youtube", None)),
    ("https://www.tumblr.com/shop/123", ("social", "tumblr", None)),
    ("https://shopblog.tumblr.com/post/1", ("social", "tumblr", None)),
    ("https://t.umblr.com/redirect?z=x", ("social", "tumblr", None)),
    ("https://vk.com/wall-1_2", ("social", "vkontakte", None)),
    ("https://m.vk.com/shop", ("social", "vkontakte", None)),
    ("https://www.threads.net/@shop/post/1", ("social", "threads", None)),
    ("https://l.threads.net/?u=x", ("social", "threads", None)),
    ("https://www.threads.com/@shop", ("social", "threads", None)),
    ("https://bsky.app/profile/shop.bsky.social/post/1", ("social", "bluesky", None)),
    ("https://www.xing.com/news/articles/1", ("social", "xing", None)),
    ("https://web.telegram.org/k/", ("social", "telegram", None)),
    ("https://t.me/shopchannel/12", ("social", "telegram", None)),
    ("https://mastodon.social/@shop/1", ("social", "mastodon", None)),
    ("https://www.snapchat.com/add/shop", ("social", "snapchat", None)),
    ("https://web.whatsapp.com/", ("social", "whatsapp", None)),
    ("https://wa.me/491234", ("social", "whatsapp", None)),
    ("https://discord.com/channels/1/2", ("social", "discord", None)),
    ("https://news.ycombinator.com/item?id=1", ("social", "hacker news", None)),
    ("https://github.com/shop/repo", ("social", "github", None)),
    ("https://stackoverflow.com/questions/1", ("social", "stackoverflow", None)),
    ("https://weibo.com/u/1", ("social", "weibo", None)),
    ("https://odnoklassniki.ru/group/1", ("social", "odnoklassniki", None)),
    ("https://plus.google.com/1", ("social", "google+", None)),
    ("https://vimeo.com/123", ("social", "vimeo", None)),
    ("https://www.flickr.com/photos/x", ("social", "flickr", None)),
    ("android-app://com.whatsapp/", ("social", "whatsapp", None)),
    ("android-app://com.pinterest/", ("social", "pinterest", None)),
    ("android-app://com.facebook.katana/", ("social", "facebook", None)),
    ("android-app://com.facebook.orca/", ("social", "facebook messenger", None)),
    ("android-app://com.instagram.android/", ("social", "instagram", None)),
    ("android-app://com.twitter.android/", ("social", "twitter", None)),
    ("android-app://com.linkedin.android/", ("social", "linkedin", None)),
    ("android-app://org.telegram.messenger/", ("social", "telegram", None)),
    ("android-app://com.reddit.frontpage/", ("social", "reddit", None)),
    ("android-app://com.zhiliaoapp.musically/", ("social", "tiktok", None)),
    ("android-app://com.google.android.youtube/", ("social", "youtube", None)),
    ("android-app://com.snapchat.android/", ("social", "snapchat", None)),
    ("android-app://jp.naver.line.android/", ("social", "line", None)),
    ("android-app://com.tencent.mm/", ("social", "wechat", None)),
]

EMAIL_CASES: list[tuple[str, tuple[str, str, str | None]]] = [
    ("https://mail.google.com/mail/u/0/#inbox", ("email", "gmail", None)),
    ("https://mail.google.com/", ("email", "gmail", None)),
    ("android-app://com.google.android.gm/", ("email", "gmail", None)),
    ("https://outlook.live.com/mail/0/inbox", ("email", "outlook", None)),
    ("https://outlook.office.com/mail/", ("email", "outlook", None)),
    ("https://outlook.office365.com/owa/", ("email", "outlook", None)),
    ("https://col130.mail.live.com/default.aspx", ("email", "outlook", None)),
    ("https://by2prd0310.outlook.com.mail.live.com/", ("email", "outlook", None)),
    ("https://snt152.mail.live.com/?tid=1", ("email", "outlook", None)),
    ("android-app://com.microsoft.office.outlook/", ("email", "outlook", None)),
    ("https://mail.yahoo.com/d/folders/1", ("email", "yahoo mail", None)),
    ("https://de.mg40.mail.yahoo.com/neo/launch", ("email", "yahoo mail", None)),
    ("https://mail.aol.com/webmail-std/en-us/suite", ("email", "aol mail", None)),
    ("https://deref-gmx.net/mail/client/abc/dereferrer/?redirectUrl=x", ("email", "gmx", None)),
    ("https://deref-gmx.de/mail/client/x", ("email", "gmx", None)),
    ("https://deref-gmx.at/mail/client/x", ("email", "gmx", None)),
    ("https://deref-gmx.ch/mail/client/x", ("email", "gmx", None)),
    ("https://navigator.gmx.net/mail", ("email", "gmx", None)),
    ("https://3c.gmx.net/mail/client/start", ("email", "gmx", None)),
    ("https://3c-bs.gmx.net/mail/client/start", ("email", "gmx", None)),
    ("https://deref-web.de/mail/client/x", ("email", "web.de", None)),
    ("https://deref-web-02.de/mail/client/x", ("email", "web.de", None)),
    ("https://3c.web.de/mail/client/start", ("email", "web.de", None)),
    ("https://navigator.web.de/", ("email", "web.de", None)),
    ("https://deref-mail.com/mail/client/x", ("email", "mail.com", None)),
    ("https://email.ionos.de/appsuite/", ("email", "ionos", None)),
    ("https://mail.ionos.com/", ("email", "ionos", None)),
    ("https://webmail.ionos.fr/", ("email", "ionos", None)),
    ("https://email.1und1.de/", ("email", "ionos", None)),
    ("https://webmail1m.orange.fr/webmail/fr_FR/read.html", ("email", "orange", None)),
    ("https://webmail2d.orange.fr/", ("email", "orange", None)),
    ("https://messagerie.orange.fr/", ("email", "orange", None)),
    ("https://email.t-online.de/em", ("email", "t-online", None)),
    ("https://mail.proton.me/u/0/inbox", ("email", "proton mail", None)),
    ("https://www.icloud.com/mail/", ("email", "icloud mail", None)),
    ("https://e.mail.ru/inbox/", ("email", "mail.ru", None)),
    ("https://mail.yandex.ru/", ("email", "yandex mail", None)),
    ("https://webmail.strato.de/", ("email", "strato", None)),
    ("https://webmail.freenet.de/", ("email", "freenet", None)),
    ("https://zimbra.free.fr/", ("email", "free", None)),
    ("https://webmail.example-hosting.org/?_task=mail", ("email", "example-hosting.org", None)),
    ("https://mail.example.co.uk/owa/", ("email", "example.co.uk", None)),
    ("https://owa.firma.ch/owa/", ("email", "firma.ch", None)),
    ("android-app://de.gmx.mobile.android.mail/", ("email", "gmx", None)),
    ("android-app://de.web.mobile.android.mail/", ("email", "web.de", None)),
    ("android-app://com.yahoo.mobile.client.android.mail/", ("email", "yahoo mail", None)),
    ("android-app://com.samsung.android.email.provider/", ("email", "samsung email", None)),
]

PAID_CASES: list[tuple[str, tuple[str, str, str | None]]] = [
    ("https://www.googleadservices.com/pagead/aclk?sa=L&ai=x", ("paid", "google", None)),
    ("https://googleadservices.com/", ("paid", "google", None)),
    ("https://pagead2.googlesyndication.com/pcs/click?x", ("paid", "google", None)),
    ("https://tpc.googlesyndication.com/simgad/1", ("paid", "google", None)),
    ("https://googleads.g.doubleclick.net/pagead/ads?client=x", ("paid", "google", None)),
    ("https://ad.doubleclick.net/ddm/trackclk/N1", ("paid", "google", None)),
    ("https://adservice.google.com/ddm/fls/z", ("paid", "google", None)),
    ("https://adservice.google.de/", ("paid", "google", None)),
    ("https://clickserve.dartsearch.net/link/click?x", ("paid", "google", None)),
    ("https://cas.criteo.com/delivery/ck.php", ("paid", "criteo", None)),
    ("https://trc.taboola.com/x/log/3/click", ("paid", "taboola", None)),
    ("https://paid.outbrain.com/network/redir?x", ("paid", "outbrain", None)),
    ("https://ib.adnxs.com/click?x", ("paid", "xandr", None)),
    ("https://aax-eu.amazon-adsystem.com/x/c/x", ("paid", "amazon ads", None)),
]

AI_CASES: list[tuple[str, tuple[str, str, str | None]]] = [
    ("https://chatgpt.com/", ("ai_assistant", "chatgpt", None)),
    ("https://chatgpt.com/c/6789-abc", ("ai_assistant", "chatgpt", None)),
    ("https://chat.openai.com/", ("ai_assistant", "chatgpt", None)),
    ("https://www.perplexity.ai/search?q=best+shoes", ("ai_assistant", "perplexity", None)),
    ("https://perplexity.ai/", ("ai_assistant", "perplexity", None)),
    ("https://gemini.google.com/app/123", ("ai_assistant", "gemini", None)),
    ("https://bard.google.com/", ("ai_assistant", "gemini", None)),
    ("https://claude.ai/chat/1", ("ai_assistant", "claude", None)),
    ("https://copilot.microsoft.com/", ("ai_assistant", "copilot", None)),
    ("https://chat.deepseek.com/", ("ai_assistant", "deepseek", None)),
    ("https://chat.mistral.ai/chat", ("ai_assistant", "le chat", None)),
    ("https://x.com/i/grok?conversation=1", ("ai_assistant", "grok", None)),
    ("https://grok.com/", ("ai_assistant", "grok", None)),
    ("https://you.com/search?q=x", ("ai_assistant", "you", None)),
    ("https://duck.ai/", ("ai_assistant", "duck.ai", None)),
    ("https://www.meta.ai/", ("ai_assistant", "meta ai", None)),
    ("https://notebooklm.google.com/", ("ai_assistant", "notebooklm", None)),
    ("android-app://com.openai.chatgpt/", ("ai_assistant", "chatgpt", None)),
    ("android-app://ai.perplexity.app.android/", ("ai_assistant", "perplexity", None)),
]

REFERRAL_CASES: list[tuple[str, tuple[str, str | None, str | None]]] = [
    ("https://www.heise.de/news/x.html", ("referral", "heise.de", None)),
    ("https://blog.example.org/post?id=1", ("referral", "blog.example.org", None)),
    ("https://docs.google.com/document/d/x", ("referral", "docs.google.com", None)),
    ("https://drive.google.com/file/d/1", ("referral", "drive.google.com", None)),
    ("https://sites.google.com/view/x", ("referral", "sites.google.com", None)),
    ("https://www.idealo.de/preisvergleich/x.html", ("referral", "idealo.de", None)),
    ("https://www.galaxus.ch/de/s1/product/x", ("referral", "galaxus.ch", None)),
    ("https://de.wikipedia.org/wiki/Schuh", ("referral", "de.wikipedia.org", None)),
    ("https://www.amazon.de/dp/B0", ("referral", "amazon.de", None)),
    ("https://www.paypal.com/checkoutnow?token=x", ("referral", "paypal.com", None)),
    ("https://mail.ru/", ("referral", "mail.ru", None)),
    ("https://www.gmx.net/magazine/x", ("referral", "gmx.net", None)),
    ("https://www.pinterest.at/pin/1", ("referral", "pinterest.at", None)),
    ("https://notfacebook.com/", ("referral", "notfacebook.com", None)),
    ("https://facebook.com.evil.example/", ("referral", "facebook.com.evil.example", None)),
    ("http://192.0.2.10:8080/x", ("referral", "192.0.2.10", None)),
    ("android-app://com.example.someapp/", ("referral", "com.example.someapp", None)),
]

INTERNAL_DIRECT_CASES: list[tuple[str | None, tuple[str, str | None, str | None]]] = [
    ("https://www.shop.example.de/cart", ("internal", None, None)),
    ("https://shop.example.de/", ("internal", None, None)),
    ("https://checkout.shop.example.de/step/2", ("internal", None, None)),
    ("http://WWW.SHOP.EXAMPLE.DE:8080/x", ("internal", None, None)),
    ("https://www.shop.example.de/search?q=schuhe", ("internal", None, None)),
    ("", ("direct", None, None)),
    ("about:blank", ("direct", None, None)),
    ("not a url", ("direct", None, None)),
    (None, ("direct", None, None)),
]

ALL_REFERRER_CASES = (
    SEARCH_CASES + SOCIAL_CASES + EMAIL_CASES + PAID_CASES + AI_CASES + REFERRAL_CASES + INTERNAL_DIRECT_CASES
)


@pytest.mark.parametrize(("referrer", "expected"), ALL_REFERRER_CASES)
def test_medium_table(referrer: str | None, expected: tuple[str, str | None, str | None]) -> None:
    result = classify(referrer, None, PAGE)
    assert (result.source, result.name, result.keyword) == expected


def test_medium_table_is_large_and_covers_every_medium() -> None:
    assert len(ALL_REFERRER_CASES) + len(CLICK_ID_CASES) + len(UTM_PRECEDENCE_CASES) >= 200
    covered = {e[0] for _, e in ALL_REFERRER_CASES} | {"paid", "campaign"}
    assert covered == set(get_args(TrafficSource))


CLICK_ID_CASES: list[tuple[str, str | None, str]] = [
    # (landing URL, referrer, platform): untagged ad clicks, before the referrer decides
    ("https://www.shop.example.de/?gclid=Cj0KCQjw", "https://www.google.com/", "google"),
    ("https://www.shop.example.de/p/1?gclid=abc&color=red", None, "google"),
    ("https://www.shop.example.de/?gbraid=0AAAAA", "https://www.google.de/", "google"),
    ("https://www.shop.example.de/?wbraid=Cj0", None, "google"),
    ("https://www.shop.example.de/?dclid=CJ", "https://ad.doubleclick.net/", "google"),
    ("https://www.shop.example.de/?fbclid=IwAR3x", "https://l.facebook.com/", "facebook"),
    ("https://www.shop.example.de/?utm_x=1&fbclid=IwAR3x", "https://l.instagram.com/", "facebook"),
    ("https://www.shop.example.de/?msclkid=5d3e", "https://www.bing.com/", "bing"),
    ("https://www.shop.example.de/?ttclid=E.C.P", "https://www.tiktok.com/", "tiktok"),
    ("https://www.shop.example.de/?li_fat_id=1a2b", "https://www.linkedin.com/", "linkedin"),
    ("https://www.shop.example.de/?twclid=2-abc", "https://t.co/x", "twitter"),
    ("https://www.shop.example.de/?epik=dj0y", "https://www.pinterest.com/", "pinterest"),
    ("https://www.shop.example.de/?ScCid=abc", None, "snapchat"),
    ("https://www.shop.example.de/?yclid=123", "https://yandex.ru/", "yandex"),
    ("https://www.shop.example.de/?rdt_cid=1", "https://www.reddit.com/", "reddit"),
    ("https://www.shop.example.de/#gclid=abc", None, "google"),
]


@pytest.mark.parametrize(("page", "referrer", "platform"), CLICK_ID_CASES)
def test_click_ids_on_the_landing_url_are_paid(page: str, referrer: str | None, platform: str) -> None:
    result = classify(referrer, None, page)
    assert (result.source, result.name, result.medium) == ("paid", platform, "cpc")


@pytest.mark.parametrize(
    "page",
    [
        "https://www.shop.example.de/?gclid=",  # empty value
        "https://www.shop.example.de/?xgclid=abc",  # another parameter
        "https://www.shop.example.de/gclid/abc",  # a path, not a parameter
    ],
)
def test_no_click_id(page: str) -> None:
    assert classify(None, None, page).source == "direct"


UTM_PRECEDENCE_CASES: list[tuple[str | None, Utm, str | None, tuple[str, str | None, str | None]]] = [
    # (referrer, utm, page, expected (medium, name, keyword)): tags win over click ids and referrers
    ("https://www.google.com/", Utm(source="google", medium="cpc", term="schuhe"), PAGE_GCLID,
     ("campaign", "google", "schuhe")),
    ("https://l.facebook.com/", Utm(source="facebook", medium="paid_social"), PAGE_FBCLID,
     ("campaign", "facebook", None)),
    ("https://chatgpt.com/", Utm(source="newsletter", medium="email"), PAGE, ("email", "newsletter", None)),
    ("https://www.google.de/search?q=x", Utm(source="partner", medium="referral"), PAGE,
     ("referral", "partner", None)),
    (None, Utm(source="chatgpt.com"), PAGE, ("ai_assistant", "chatgpt", None)),
    (None, Utm(source="perplexity"), PAGE, ("ai_assistant", "perplexity", None)),
    (None, Utm(source="facebook"), PAGE, ("social", "facebook", None)),
    (None, Utm(source="google"), PAGE, ("search", "google", None)),
    (None, Utm(source="l.instagram.com"), PAGE, ("social", "instagram", None)),
    (None, Utm(source="flyer"), PAGE, ("campaign", "flyer", None)),
    (None, Utm(source="google", campaign="brand"), PAGE, ("campaign", "google", None)),
    ("https://www.shop.example.de/", Utm(source="newsletter"), PAGE, ("email", "newsletter", None)),
    ("https://www.bing.com/search?q=boots", Utm(medium="weird"), PAGE, ("search", "bing", "boots")),
    (None, Utm(medium="weird"), PAGE_GCLID, ("paid", "google", None)),
]


@pytest.mark.parametrize(("referrer", "utm", "page", "expected"), UTM_PRECEDENCE_CASES)
def test_utm_precedence(
    referrer: str | None, utm: Utm, page: str | None, expected: tuple[str, str | None, str | None]
) -> None:
    result = classify(referrer, utm, page)
    assert (result.source, result.name, result.keyword) == expected


def test_keyword_is_the_first_listed_parameter_and_bounded() -> None:
    long = classify("https://www.bing.com/search?q=" + "x" * 500, None, PAGE).keyword
    assert long == "x" * traffic.KEYWORD_MAX_CHARS
    assert classify("https://www.bing.com/search?q=%20%20", None, PAGE).keyword is None
    assert classify("https://www.bing.com/search?q=a&q=b", None, PAGE).keyword == "a"
    assert classify("https://www.bing.com/search?q=%ZZbad", None, PAGE).keyword == "%zzbad"
    assert classify("https://www.google.de/search?q=Eins++Zwei", None, PAGE).keyword == "eins zwei"


def test_lossy_host_follows_matomo() -> None:
    assert traffic.lossy_host("www.google.co.uk") == "google.{}"
    assert traffic.lossy_host("google.com.au") == "google.{}"
    assert traffic.lossy_host("de.search.yahoo.com") == "{}.search.yahoo.com"
    assert traffic.lossy_host("m.bing.com") == "bing.com"
    assert traffic.lossy_host("www2.example.com") == "example.com"
    assert traffic.lossy_host("images.yandex.ru") == "images.yandex.{}"


def test_shipped_lists_load_with_attribution() -> None:
    directory = traffic.LISTS_DIR
    for name in ("SearchEngines.yml", "Socials.yml", "AIAssistants.yml", "LICENSE", "README.md"):
        assert (directory / name).is_file(), name
    assert "CC0" in (directory / "LICENSE").read_text(encoding="utf-8")
    readme = (directory / "README.md").read_text(encoding="utf-8")
    assert "matomo-org/searchengine-and-social-list" in readme and "refresh" in readme
    loaded = traffic.load_lists(directory)
    assert len(loaded.engines) > 500 and len(loaded.socials) > 150 and len(loaded.assistants) > 15
    assert loaded.engines["google.{}"].name == "google" and loaded.engines["google.{}"].params == ("q",)
    assert loaded.socials["t.co"] == "twitter" and loaded.assistants["chatgpt.com"] == "chatgpt"
    assert ("/i/grok", "grok") in loaded.assistant_paths["x.com"]


def test_the_shipped_lists_stand_alone() -> None:
    forbidden = ("/work/" + "shared", "../" + "shared")  # split so this file does not match itself
    files = [Path(traffic.__file__), *(p for p in traffic.LISTS_DIR.iterdir() if p.is_file())]
    assert [str(p) for p in files for word in forbidden if word.encode() in p.read_bytes()] == []


def test_refresh_checks_what_it_downloads() -> None:
    from streams.data.referrers import refresh

    for name in refresh.LISTS:
        refresh.check(name, (traffic.LISTS_DIR / name).read_text(encoding="utf-8"))  # the shipped ones pass
    with pytest.raises(ValueError):
        refresh.check("Socials.yml", "<html>rate limited</html>")
    with pytest.raises(ValueError):
        refresh.check("SearchEngines.yml", "\n".join(f"E{i}:\n  - urls: x.com" for i in range(6)))
