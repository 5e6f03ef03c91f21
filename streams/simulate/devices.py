"""The devices visitors browse with: a user agent, what a parser should make of it, screens, a weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    key: str
    user_agent: str
    category: str
    """What a user-agent parser should report: mobile, tablet, desktop."""
    os: str
    browser: str
    screens: tuple[tuple[int, int], ...]
    weight: float


DEVICES: Final[tuple[DeviceProfile, ...]] = (
    DeviceProfile(
        "android_samsung",
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.113 Mobile Safari/537.36",
        "mobile",
        "Android",
        "Chrome Mobile",
        ((384, 854), (412, 915)),
        14,
    ),
    DeviceProfile(
        "android_pixel",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        "mobile",
        "Android",
        "Chrome Mobile",
        ((412, 915),),
        7,
    ),
    DeviceProfile(
        "android_xiaomi",
        "Mozilla/5.0 (Linux; Android 13; 2201116SG) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/123.0.6312.118 Mobile Safari/537.36",
        "mobile",
        "Android",
        "Chrome Mobile",
        ((393, 873),),
        6,
    ),
    DeviceProfile(
        "iphone_15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Mobile/15E148 Safari/604.1",
        "mobile",
        "iOS",
        "Mobile Safari",
        ((393, 852), (430, 932)),
        14,
    ),
    DeviceProfile(
        "iphone_13",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.6 Mobile/15E148 Safari/604.1",
        "mobile",
        "iOS",
        "Mobile Safari",
        ((390, 844),),
        8,
    ),
    DeviceProfile(
        "ipad",
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1",
        "tablet",
        "iOS",
        "Mobile Safari",
        ((820, 1180), (1024, 1366)),
        5,
    ),
    DeviceProfile(
        "windows10_chrome",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "desktop",
        "Windows",
        "Chrome",
        ((1920, 1080), (1366, 768), (1536, 864)),
        17,
    ),
    DeviceProfile(
        "windows10_edge",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
        "desktop",
        "Windows",
        "Edge",
        ((1920, 1080), (1280, 720)),
        8,
    ),
    DeviceProfile(
        "windows10_firefox",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "desktop",
        "Windows",
        "Firefox",
        ((1920, 1080),),
        3,
    ),
    DeviceProfile(
        "macos_safari",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Safari/605.1.15",
        "desktop",
        "Mac OS X",
        "Safari",
        ((1440, 900), (1512, 982), (2560, 1440)),
        9,
    ),
    DeviceProfile(
        "macos_chrome",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        "desktop",
        "Mac OS X",
        "Chrome",
        ((1440, 900), (1728, 1117)),
        4,
    ),
    DeviceProfile(
        "linux_firefox",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "desktop",
        "Linux",
        "Firefox",
        ((1920, 1080), (2560, 1440)),
        3,
    ),
)
DEVICE_BY_KEY: Final = {d.key: d for d in DEVICES}
