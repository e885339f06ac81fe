"""The hooks' pure functions, imported: reading azd's token answer and times, ARM's
error bodies, and finding batch's run summaries in log stream lines of either format."""

import json

import pytest

import azure_api
import postdeploy

SUMMARY = {"message": "run finished", "outcome": "completed", "read": 3, "inserted": 3, "already_present": 0}


def test_azd_token_json_is_read_with_its_expiry():
    token, expires = azure_api.parse_azd_token('{"token": "abc", "expiresOn": "2026-05-01T12:00:00Z"}\n')
    assert token == "abc"
    assert expires == 1777636800.0


def test_azd_token_json_after_other_output_is_found():
    token, _ = azure_api.parse_azd_token('a notice\n{"token": "abc", "expiresOn": "2026-05-01T12:00:00+02:00"}\n')
    assert token == "abc"


def test_output_without_a_token_is_an_error():
    with pytest.raises(azure_api.HookFailure):
        azure_api.parse_azd_token("eyJ0eXAiOiJKV1Qi\n")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-05-01T12:00:00Z", 1777636800.0),
        ("2026-05-01T14:00:00+02:00", 1777636800.0),
        ("2026-05-01T12:00:00.5Z", 1777636800.5),
        ("2026-05-01T12:00:00.123456789Z", 1777636800.123456),
        ("2026-05-01T12:00:00", 1777636800.0),
        ("soon", None),
        ("2026-13-01T12:00:00Z", None),
    ],
)
def test_rfc3339_times(text, expected):
    assert azure_api.parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"error": {"code": "AuthorizationFailed", "message": "no"}}', "AuthorizationFailed: no"),
        (b'{"code": "JobExecutionNotFound", "message": "gone"}', "JobExecutionNotFound: gone"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (b"", "no message"),
    ],
)
def test_arm_error_messages(body, expected):
    assert azure_api.error_message(body) == expected


def test_summaries_in_json_envelopes():
    log = "\n".join(
        json.dumps({"TimeStamp": "2026-12-01T10:00:00", "Log": line})
        for line in ["Connecting...", json.dumps({"message": "run started"}), json.dumps(SUMMARY)]
    )
    assert postdeploy.summaries_in(log) == [SUMMARY]


def test_summaries_in_text_with_a_time_prefix_and_escaped_quotes():
    app_line = json.dumps(SUMMARY)
    log = "\n".join(
        [
            "2026-12-01T10:00:00.000Z Connecting to the container 'batch'...",
            "2026-12-01T10:00:01.000Z " + app_line.replace('"', "\\u0022"),
            "2026-12-01T10:00:02.000Z " + app_line.replace('"', '\\"'),
            "2026-12-01T10:00:03.000Z " + app_line,
            "2026-12-01T10:00:04.000Z {not json",
        ]
    )
    assert postdeploy.summaries_in(log) == [SUMMARY, SUMMARY, SUMMARY]


def test_summaries_in_plain_app_lines():
    assert postdeploy.summaries_in(json.dumps(SUMMARY) + "\n" + json.dumps({"message": "listening"})) == [SUMMARY]


@pytest.mark.parametrize("value", ["10", -1, True, None, 1.5])
def test_a_summary_with_unreadable_counts_is_an_error(value):
    with pytest.raises(azure_api.HookFailure, match="cannot read batch's summary"):
        postdeploy.counts({**SUMMARY, "read": value})
