"""What mParticle's Events API accepts: names, limits and endpoints.

Sources: https://docs.mparticle.com/developers/server/json-reference/ ,
https://docs.mparticle.com/guides/default-service-limits/ and
https://docs.mparticle.com/developers/server/http/ . No Django imports here.
"""

from __future__ import annotations

# https://docs.mparticle.com/developers/server/json-reference/#user_identities
IDENTITY_KEYS: tuple[str, ...] = (
    "customer_id",
    "email",
    "other",
    "other_id_2",
    "other_id_3",
    "other_id_4",
    "other_id_5",
    "other_id_6",
    "other_id_7",
    "other_id_8",
    "other_id_9",
    "other_id_10",
    "mobile_number",
    "phone_number_2",
    "phone_number_3",
    "facebook",
    "facebook_custom_audience_id",
    "google",
    "microsoft",
    "twitter",
    "yahoo",
    "alias",
)

RESERVED_USER_ATTRIBUTES: tuple[str, ...] = (
    "$firstname",
    "$lastname",
    "$age",
    "$gender",
    "$city",
    "$state",
    "$zip",
    "$country",
    "$mobile",
    "$address",
)

EVENT_TYPES: tuple[str, ...] = (
    "custom_event",
    "screen_view",
    "commerce_event",
    "session_start",
    "session_end",
    "user_attribute_change",
    "user_identity_change",
    "opt_out",
    "crash_report",
    "breadcrumb",
    "network_performance",
    "first_run",
    "application_state_transition",
    "push_registration",
    "push_message",
    "push_reaction",
    "profile",
    "pre_attribution",
    "uninstall",
)

CUSTOM_EVENT_TYPES: tuple[str, ...] = (
    "navigation",
    "location",
    "search",
    "transaction",
    "user_content",
    "user_preference",
    "social",
    "media",
    "attribution",
    "other",
)

PRODUCT_ACTIONS: tuple[str, ...] = (
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "checkout_option",
    "click",
    "view_detail",
    "purchase",
    "refund",
    "add_to_wishlist",
    "remove_from_wish_list",
)

ENVIRONMENTS: tuple[str, ...] = ("development", "production")

# https://docs.mparticle.com/guides/default-service-limits/
MAX_BATCHES_PER_REQUEST = 100
MAX_REQUEST_BYTES = 256 * 1024  # the whole body must stay below this
MAX_BATCH_BYTES = 128 * 1024
MAX_NAME_LENGTH = 256
MAX_VALUE_LENGTH = 4096
MAX_ATTRIBUTES_PER_EVENT = 100
MAX_USER_ATTRIBUTES = 100
MAX_USER_ATTRIBUTE_LIST_ENTRIES = 1000
MAX_USER_ATTRIBUTE_LIST_ENTRY_LENGTH = 512
MAX_EVENT_NAMES_PER_WORKSPACE = 1000
DEFAULT_BATCHES_PER_SECOND = 270

# Historical data rules (https://docs.mparticle.com/developers/server/http/#v2bulkeventshistorical)
REALTIME_MAX_AGE_MS = 30 * 24 * 3600 * 1000
HISTORICAL_MIN_AGE_MS = 72 * 3600 * 1000

# Paths under a base URL.
EVENTS_PATH = "/events"
BULK_PATH = "/bulkevents"
HISTORICAL_PATH = "/bulkevents/historical"

# Base URLs by pod. https://docs.mparticle.com/developers/server/http/#endpoint
PARTNER_BASE_URL = "https://inbound.mparticle.com/s2s/v2"
POD_BASE_URLS: dict[str, str] = {
    "partner": PARTNER_BASE_URL,
    "us1": "https://s2s.mparticle.com/v2",
    "us2": "https://s2s.us2.mparticle.com/v2",
    "eu1": "https://s2s.eu1.mparticle.com/v2",
    "au1": "https://s2s.au1.mparticle.com/v2",
}

# Batch-level fields beyond the user's identities (https://docs.mparticle.com/developers/server/json-reference/
# #device_info, #partner_identities, #context, and the Events API's JSON schema,
# https://docs.mparticle.com/schema/mparticle.inbound.eventsapi.schema.json).
# The device identities of `device_info`, as mParticle names them: those typed Uuid in the schema must be
# UUIDs in the 8-4-4-4-12 hex form; the others are text.
UUID_DEVICE_IDS: tuple[str, ...] = (
    "ios_advertising_id",
    "ios_idfv",
    "android_advertising_id",
    "roku_advertising_id",
    "roku_publisher_id",
    "fire_advertising_id",
)
TEXT_DEVICE_IDS: tuple[str, ...] = (
    "android_uuid",
    "push_token",
    "microsoft_advertising_id",
    "microsoft_publisher_id",
    "amp_id",
)
DEVICE_IDS: tuple[str, ...] = UUID_DEVICE_IDS + TEXT_DEVICE_IDS
# What else device_info may hold (the schema's additionalProperties is false), by JSON type, for the sandbox.
DEVICE_INFO_TEXT: tuple[str, ...] = TEXT_DEVICE_IDS + (
    "brand",
    "product",
    "device",
    "device_manufacturer",
    "os_version",
    "device_model",
    "device_country",
    "locale_language",
    "locale_country",
    "network_country",
    "network_carrier",
    "network_code",
    "network_mobile_country_code",
    "build_identifier",
    "http_header_user_agent",
    "cpu_architecture",
    "radio_access_technology",
    "bluetooth_version",
    "build_version_release",
)
DEVICE_INFO_INTEGERS: tuple[str, ...] = (
    "screen_height",
    "screen_width",
    "screen_dpi",
    "timezone_offset",
    "att_timestamp_unixtime_ms",
)
DEVICE_INFO_BOOLEANS: tuple[str, ...] = (
    "is_tablet",
    "push_notification_sound_enabled",
    "push_notification_vibrate_enabled",
    "supports_telephony",
    "has_nfc",
    "bluetooth_enabled",
    "limit_ad_tracking",
    "is_dst",
)
DEVICE_PLATFORMS: tuple[str, ...] = (
    "iOS",
    "Android",
    "web",
    "tvOS",
    "roku",
    "out_of_band",
    "alexa",
    "smart_tv",
    "fire_tv",
    "xbox",
)
ATT_AUTHORIZATION_STATUSES: tuple[str, ...] = ("authorized", "denied", "not_determined", "restricted")
# The UUID form of the schema's Uuid type (device ids, mp_deviceid).
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

# Commerce events beside product_action (#promotion_action, #product_impressions).
PROMOTION_ACTIONS: tuple[str, ...] = ("view", "click")
PROMOTION_FIELDS: tuple[str, ...] = ("id", "name", "creative", "position")
