"""The normaliser: a corpus of every schema variant, broken variants, and properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.errors import PayloadError
from edged.model import Kind
from edged.receive.normalize import normalize, sanitize
from tests.conftest import SERIAL, auth_request, recognition

OLD_FIRMWARE = {  # the example from the vendor's push page, firmware 1.0/1.1
    "type": 0,
    "data": {
        "recognizeStatus": 2,
        "deviceSN": "PS71HD01MC22C00014",
        "recognizeScore": 0.9837480783462524,
        "livenessScore": 0.9073520302772522,
        "mask": 1,
        "rgb_image": "xxxxxxxxxxxxxx=",
        "pass": True,
        "mode": 0,
        "user": {"name": "Q", "user_id": 1, "type": 1, "ic_number": "111", "job_number": "2222"},
        "timestamp": 1660625866,
    },
}


def test_old_firmware_example() -> None:
    event = normalize(OLD_FIRMWARE)
    assert event.kind is Kind.RECOGNITION and event.firmware == "old"
    assert event.user is not None and event.user.user_id == "1"
    assert event.user.ic_number == "111" and event.user.job_number == "2222"
    assert event.occurred_at == 1660625866
    assert event.liveness_score == pytest.approx(0.907, abs=1e-3)
    assert event.dedup_key.startswith(f"{SERIAL}:h:")
    assert event.image_b64 == "xxxxxxxxxxxxxx="
    assert event.raw["data"]["rgb_image"] == "<15 base64 chars>"


def test_new_firmware_keys_on_uuid_and_redacts_pin() -> None:
    event = normalize(recognition(uuid="abc-1"))
    assert event.firmware == "new" and event.dedup_key == f"{SERIAL}:abc-1"
    assert event.raw["data"]["user"]["pin"] == "***"
    assert event.user is not None and event.user.has_pin
    assert event.user.groups == ["staff"]


def test_integer_ids_and_card_numbers_become_strings() -> None:
    body = recognition(user={"user_id": 77, "ic_number": 12345678, "job_number": 9, "type": 1})
    user = normalize(body).user
    assert user is not None
    assert (user.user_id, user.ic_number, user.job_number) == ("77", "12345678", "9")


@pytest.mark.parametrize("user", [None, {}, "", {"name": None, "user_id": None, "pin": ""}])
def test_empty_users_are_none(user: Any) -> None:
    assert normalize(recognition(user=user, recognitionType=3)).user is None


def test_milliseconds_and_seconds() -> None:
    secs = normalize(recognition(timestamp=1700000000)).occurred_at
    millis = normalize(recognition(timestamp=1700000000123)).occurred_at
    assert secs == 1700000000 and millis == pytest.approx(1700000000.123)
    guest = normalize(
        recognition(
            user={"user_id": "v", "guest_time_start": 1700000000000, "guest_time_end": 1700003600}
        )
    ).user
    assert guest is not None and (guest.guest_start, guest.guest_end) == (1700000000, 1700003600)


def test_unknown_enum_values_are_kept() -> None:
    event = normalize(
        recognition(recognitionType=42, entry_mode=99, mode=10, mask=7, abnormal_type=55555)
    )
    assert (event.recognition_type, event.entry_mode, event.mode, event.mask) == (42, 99, 10, 7)
    assert event.abnormal_type == 55555


@pytest.mark.parametrize(
    ("body", "blacklisted"),
    [
        (recognition(recognitionType=5), True),
        (recognition(user={"user_id": "x", "type": 5}), True),
        (recognition(user={"user_id": "x", "type": 3}), True),  # before firmware 1.3.0
        (recognition(user={"user_id": "x", "type": 2}), False),
        (auth_request(user={"user_id": "x", "type": 3}), True),
    ],
)
def test_blacklist_old_and_new(body: dict[str, Any], blacklisted: bool) -> None:
    assert normalize(body).blacklisted is blacklisted


def test_liveness_and_stranger_in_both_schemas() -> None:
    assert normalize(recognition(recognitionType=4)).not_live
    assert normalize(auth_request(recognizeStatus=1)).not_live
    assert normalize(recognition(recognitionType=3)).stranger
    assert normalize(auth_request(recognizeStatus=3)).stranger
    assert not normalize(auth_request(recognizeStatus=4)).not_live


def test_alarm() -> None:
    body = {
        "type": 1,
        "data": {
            "deviceSN": SERIAL,
            "trace_id": "t1",
            "code": 20003,
            "status": 3,
            "event_time": 1700000000500,
            "alarm_photo": "/9j/",
            "description": "fire",
            "user_id": "",
        },
    }
    event = normalize(body)
    assert event.kind is Kind.ALARM and event.alarm_code == 20003 and event.alarm_status == 3
    assert event.occurred_at == pytest.approx(1700000000.5)
    assert event.dedup_key == f"{SERIAL}:alarm:t1:3"
    assert event.raw["data"]["alarm_photo"] == "<4 base64 chars>"


def test_unknown_type_is_kept_with_a_stable_key() -> None:
    body = {"type": 9, "data": {"deviceSN": SERIAL, "x": 1}}
    first, second = normalize(body), normalize(json.loads(json.dumps(body)))
    assert first.kind is Kind.OTHER and first.push_type == 9
    assert first.dedup_key == second.dedup_key
    assert normalize({"type": 9, "data": [1]}, header_sn=SERIAL).serial == SERIAL


def test_serial_from_header_when_body_lacks_it() -> None:
    body = recognition()
    del body["data"]["deviceSN"]
    assert normalize(body, header_sn=SERIAL).serial == SERIAL


def test_hash_key_is_stable_and_sensitive() -> None:
    a = normalize(auth_request(ts=1700000000))
    b = normalize(auth_request(ts=1700000000))
    c = normalize(auth_request(ts=1700000001))
    assert a.dedup_key == b.dedup_key != c.dedup_key


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"type": 0, "data": None}, "data: expected an object"),
        ({"type": "zero", "data": {}}, "type: expected an integer"),
        (recognition(recognizeScore="high"), "data.recognizeScore: expected a number"),
        (recognition(recognizeScore=float("nan")), "data.recognizeScore"),
        (recognition(timestamp=[1]), "data.timestamp: expected a number"),
        (recognition(user=[1]), "data.user: expected an object"),
        (recognition(user={"user_id": {"a": 1}}), "data.user.user_id: expected a string"),
        (recognition(rgb_image=5), "data.rgb_image: expected a base64 string"),
        (recognition(deviceSN=""), "data.deviceSN: required"),
        (auth_request(deviceSN=None), "deviceSN: required"),
        (recognition(user={"user_id": "x" * 2000}), "longer than"),
        ([1, 2, 3], "body: expected a JSON object"),
    ],
)
def test_broken_variants(body: Any, message: str) -> None:
    with pytest.raises(PayloadError, match=message.replace(".", r"\.")):
        normalize(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "deviceSN",
        "uuid",
        "recognitionType",
        "recognizeStatus",
        "recognizeScore",
        "timestamp",
        "user",
        "rgb_image",
        "mask",
        "entry_mode",
        "pass",
        "type",
        "data",
        "qrcode_content",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=8))
def test_normalize_never_fails_unexpectedly(body: dict[str, Any]) -> None:
    """Any JSON gives an Event or a PayloadError, never another exception."""
    try:
        event = normalize(body)
    except PayloadError:
        return
    assert event.serial and event.dedup_key
    json.dumps(event.raw)


@given(st.text(min_size=1, max_size=10) | st.integers())
def test_sanitize_removes_every_pin(pin: str | int) -> None:
    body = recognition(user={"user_id": "1", "pin": pin})
    assert sanitize(body)["data"]["user"]["pin"] == "***"
    assert body["data"]["user"]["pin"] == pin  # the original is untouched


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2", "\u2460", "-\u00b3"])
def test_digits_that_are_not_numbers_are_a_payload_error(value: str) -> None:
    with pytest.raises(PayloadError, match="expected an integer"):
        normalize({"type": value, "data": {}})


def test_numbers_in_other_scripts_are_numbers() -> None:
    assert normalize(recognition(recognizeStatus="\u0663")).recognize_status == 3
