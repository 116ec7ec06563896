"""Secret redaction: names, value shapes, argv, and the session-wide scrubber."""

from __future__ import annotations

import pytest

from clusterbisect.redact import REDACTED, Redactor, scrub_shapes, secret_argv, secrets_in

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgres://app:s3cret@db:5432/x", f"postgres://app:{REDACTED}@db:5432/x"),
        ("https://TOKEN123@github.com/o/r", f"https://{REDACTED}@github.com/o/r"),
        (
            "--index-url https://user:TOK@pypi.corp/simple",
            f"--index-url https://user:{REDACTED}@pypi.corp/simple",
        ),
        ("http://proxy.corp:3128", "http://proxy.corp:3128"),
        ("--token=abc123 --batch 4", f"--token={REDACTED} --batch 4"),
        ("--password hunter2 --lr 1", f"--password {REDACTED} --lr 1"),
        ("--hf-token xyz", f"--hf-token {REDACTED}"),
        ("--author ada --tokenizer bpe", "--author ada --tokenizer bpe"),
        ("--password --verbose", "--password --verbose"),
        (f"key:\n{PEM}\nend", f"key:\n{REDACTED}\nend"),
        (f"Bearer {JWT}", f"Bearer {REDACTED}"),
        ("AKIAIOSFODNN7EXAMPLE", REDACTED),
        ("ghp_" + "a" * 36, REDACTED),
        ("github_pat_" + "A1" * 20, REDACTED),
        ("sk-ant-api03-" + "x" * 24, REDACTED),
        ("hf_" + "Ab" * 17, REDACTED),
        ("xoxb-1234-5678-abcdef", REDACTED),
        ("TOKENIZERS_PARALLELISM=false", "TOKENIZERS_PARALLELISM=false"),
        ("https://example.com/path?x=1", "https://example.com/path?x=1"),
        ("a skeleton key", "a skeleton key"),
    ],
)
def test_secret_shapes(text: str, shown: str) -> None:
    assert scrub_shapes(text) == shown
    assert bool(secrets_in(text)) == (shown != text)


def test_secret_argv_hides_the_value_after_a_secret_flag() -> None:
    argv = ["train.py", "--password", "hunter2", "--api-key=xyz", "--lr", "0.1", "--db_pass", "p"]
    assert secret_argv(argv) == [
        "train.py",
        "--password",
        REDACTED,
        f"--api-key={REDACTED}",
        "--lr",
        "0.1",
        "--db_pass",
        REDACTED,
    ]


def test_the_redactor_scrubs_unchanged_secrets_from_text() -> None:
    redactor = Redactor(
        [
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
            ("LEARNING_RATE", "0.1"),
            ("DATABASE_URL", "postgres://app:pw123456@db/x"),
            ("SSH_KEY", PEM),
            ("FLAG_TOKEN", "1"),  # too short to scrub from text (it would blank every "1")
            ("command", ["python", "train.py", "--token", "tok_abcdef"]),
        ]
    )
    log = "key wJalrXUtnFEMI/K7MDENG, url pw123456, lr 0.1, step 1, argv tok_abcdef\n" + PEM
    shown = redactor.text(log)
    for secret in ("wJalrXUtnFEMI", "pw123456", "MIIE", "tok_abcdef"):
        assert secret not in shown
    assert "lr 0.1, step 1" in shown
    # A value is hidden inside nested data too.
    assert redactor.value({"env": [{"value": "x wJalrXUtnFEMI/K7MDENG"}]}) == {
        "env": [{"value": f"x {REDACTED}"}]
    }


def test_a_url_secret_is_found_after_any_run_of_scheme_characters() -> None:
    # The URL shape is tried from the start of a run of scheme characters (a 200 KiB
    # value of letters once took minutes); a scheme after digits is still found.
    text = "x https://u:pw@h 1abc://tok@h db+postgres://a:b@c " + "x" * (200 << 10)
    assert secrets_in(text) == ["pw", "tok", "b"]
