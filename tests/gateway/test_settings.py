"""gateway/settings.py: one typed settings object from a TOML file and GATEWAY_ variables."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.settings import (
    Duration,
    Secret,
    SettingsError,
    iter_settings,
    load_settings,
    normalise_host,
)

BASE = """
[server]
public_hosts = ["platform.example.nl"]
tls_cert_file = "/etc/gateway/cert.pem"
tls_key_file = "/etc/gateway/key.pem"

[assertion]
key_files = ["/etc/gateway/assertion-key.pem"]
"""


def _file(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


class TestSources:
    def test_file_values_are_typed(self, tmp_path: Path) -> None:
        """Values from the file arrive with their declared types."""
        settings = load_settings(_file(tmp_path), environ={})
        assert settings.server.public_hosts == ("platform.example.nl",)
        assert settings.server.tls_cert_file == Path("/etc/gateway/cert.pem")
        assert settings.server.https_port == 8443

    def test_environment_overrides_file(self, tmp_path: Path) -> None:
        """GATEWAY_SECTION__KEY wins over the file and is parsed to the field's type."""
        settings = load_settings(
            _file(tmp_path),
            environ={
                "GATEWAY_SERVER__HTTPS_PORT": "9443",
                "GATEWAY_SERVER__TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.0/24",
                "GATEWAY_UPSTREAM__READ_TIMEOUT": "1m30s",
                "GATEWAY_SERVER__HSTS_PRELOAD": "yes",
            },
        )
        assert settings.server.https_port == 9443
        assert settings.server.trusted_proxies == (
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("192.168.1.0/24"),
        )
        assert float(settings.upstream.read_timeout) == 90.0
        assert settings.server.hsts_preload is True

    def test_config_file_from_environment(self, tmp_path: Path) -> None:
        """GATEWAY_CONFIG names the file when no path is passed."""
        settings = load_settings(environ={"GATEWAY_CONFIG": str(_file(tmp_path))})
        assert settings.server.public_hosts == ("platform.example.nl",)

    def test_json_list_in_environment(self, tmp_path: Path) -> None:
        """A list variable may be a JSON array."""
        settings = load_settings(
            _file(tmp_path), environ={"GATEWAY_SERVER__PUBLIC_HOSTS": '["a.example", "B.example."]'}
        )
        assert settings.server.public_hosts == ("a.example", "b.example")


class TestErrorsNameTheSetting:
    @pytest.mark.parametrize(
        ("environ", "message"),
        [
            ({"GATEWAY_SERVER__HTTPS_PORTT": "1"}, r"server\.https_portt: unknown setting"),
            ({"GATEWAY_SERVRE__HOST": "x"}, r"\[servre\]: unknown section"),
            ({"GATEWAY_HOST": "x"}, r"GATEWAY_HOST: unknown setting"),
            ({"GATEWAY_SERVER__HTTPS_PORT": "abc"}, r"server\.https_port: expected an integer"),
            ({"GATEWAY_SERVER__HTTPS_PORT": "70000"}, r"server\.https_port: 70000 is not"),
            ({"GATEWAY_UPSTREAM__READ_TIMEOUT": "5 minutes"}, r"upstream\.read_timeout"),
            ({"GATEWAY_SERVER__TRUSTED_PROXIES": "10.0.0.1/8"}, r"server\.trusted_proxies"),
            ({"GATEWAY_SERVER__HSTS_MAX_AGE": "30d"}, r"server\.hsts_max_age: must be at least"),
            ({"GATEWAY_SERVER__PUBLIC_HOSTS": "bad host!"}, r"server\.public_hosts"),
            ({"GATEWAY_UPSTREAM__URL": "ftp://x"}, r"upstream\.url: expected an http"),
        ],
    )
    def test_bad_environment_values(
        self, tmp_path: Path, environ: dict[str, str], message: str
    ) -> None:
        """Each bad value raises SettingsError naming the setting."""
        with pytest.raises(SettingsError, match=message):
            load_settings(_file(tmp_path), environ=environ)

    def test_error_names_the_source(self, tmp_path: Path) -> None:
        """The message says which variable or file the bad value came from."""
        with pytest.raises(SettingsError, match="from environment variable GATEWAY_SERVER__"):
            load_settings(_file(tmp_path), environ={"GATEWAY_SERVER__HTTPS_PORT": "x"})

    def test_unknown_key_in_file(self, tmp_path: Path) -> None:
        """A misspelt key in the file is an error, not silently ignored."""
        path = _file(tmp_path, BASE.replace("[assertion]", "hsts_maxage = '400d'\n[assertion]"))
        with pytest.raises(SettingsError, match=r"server\.hsts_maxage: unknown setting"):
            load_settings(path, environ={})

    def test_invalid_toml(self, tmp_path: Path) -> None:
        """A broken file is reported with its path."""
        path = _file(tmp_path, "[server\n")
        with pytest.raises(SettingsError, match="is not valid TOML"):
            load_settings(path, environ={})

    def test_missing_file(self, tmp_path: Path) -> None:
        """A settings file that is not there is an error."""
        with pytest.raises(SettingsError, match="cannot read the settings file"):
            load_settings(tmp_path / "nope.toml", environ={})

    def test_public_hosts_required(self) -> None:
        """Without a host allow-list nothing could be served safely."""
        with pytest.raises(SettingsError, match=r"server\.public_hosts: at least one"):
            load_settings(environ={})

    def test_tls_files_required(self, tmp_path: Path) -> None:
        """HTTPS needs a certificate and key unless plain HTTP is explicitly allowed."""
        path = _file(
            tmp_path,
            '[server]\npublic_hosts = ["a.example"]\n[assertion]\nkey_files = ["/k.pem"]\n',
        )
        with pytest.raises(SettingsError, match=r"server\.tls_cert_file: required"):
            load_settings(path, environ={})
        relaxed = load_settings(path, environ={"GATEWAY_SERVER__ALLOW_PLAIN_HTTP": "true"})
        assert relaxed.server.allow_plain_http is True


class TestSecrets:
    def test_secret_from_file_variant(self, tmp_path: Path) -> None:
        """A *_FILE variable reads the secret from the file, without the trailing newline."""
        secret_file = tmp_path / "password"
        secret_file.write_text("s3cr3t-value\n")
        settings = load_settings(
            _file(tmp_path),
            environ={"GATEWAY_SERVER__TLS_KEY_PASSWORD_FILE": str(secret_file)},
        )
        assert settings.server.tls_key_password == Secret("s3cr3t-value")
        assert settings.server.tls_key_password is not None
        assert settings.server.tls_key_password.reveal() == "s3cr3t-value"

    def test_secret_never_shown(self, tmp_path: Path) -> None:
        """Neither repr of the settings nor check-config output contains a secret."""
        settings = load_settings(
            _file(tmp_path), environ={"GATEWAY_SERVER__TLS_KEY_PASSWORD": "hunter2-secret"}
        )
        assert "hunter2-secret" not in repr(settings)
        assert "hunter2-secret" not in repr(list(iter_settings(settings)))

    def test_unreadable_secret_file(self, tmp_path: Path) -> None:
        """A missing secret file is an error naming the setting, never an empty secret."""
        with pytest.raises(SettingsError, match=r"server\.tls_key_password: cannot read"):
            load_settings(
                _file(tmp_path),
                environ={"GATEWAY_SERVER__TLS_KEY_PASSWORD_FILE": str(tmp_path / "missing")},
            )

    def test_empty_secret_file(self, tmp_path: Path) -> None:
        """An empty secret file is refused."""
        empty = tmp_path / "empty"
        empty.write_text("\n")
        with pytest.raises(SettingsError, match="is empty"):
            load_settings(
                _file(tmp_path), environ={"GATEWAY_SERVER__TLS_KEY_PASSWORD_FILE": str(empty)}
            )

    def test_file_variant_only_for_secrets(self, tmp_path: Path) -> None:
        """A _FILE suffix on an ordinary setting is an unknown setting."""
        with pytest.raises(SettingsError, match="unknown setting"):
            load_settings(_file(tmp_path), environ={"GATEWAY_SERVER__HOST_FILE": "/etc/hostname"})


class TestRelaxations:
    def test_closed_defaults_relax_nothing(self, tmp_path: Path) -> None:
        """The default settings list no relaxation."""
        assert load_settings(_file(tmp_path), environ={}).relaxations() == []

    def test_each_relaxation_is_listed(self, tmp_path: Path) -> None:
        """Plain HTTP, trusted proxies and plain HTTP to a remote upstream are all listed."""
        settings = load_settings(
            _file(tmp_path),
            environ={
                "GATEWAY_SERVER__ALLOW_PLAIN_HTTP": "1",
                "GATEWAY_SERVER__TRUSTED_PROXIES": "10.1.0.0/16",
                "GATEWAY_UPSTREAM__URL": "http://platform.internal:8000",
                "GATEWAY_UPSTREAM__ALLOW_PLAIN_HTTP_REMOTE": "true",
            },
        )
        text = "\n".join(settings.relaxations())
        assert "server.allow_plain_http" in text
        assert "10.1.0.0/16" in text
        assert "upstream.allow_plain_http_remote" in text

    def test_remote_plain_http_refused_without_the_setting(self, tmp_path: Path) -> None:
        """Plain http:// to another machine is refused unless explicitly allowed."""
        with pytest.raises(SettingsError, match="plain http:// to the remote host"):
            load_settings(
                _file(tmp_path), environ={"GATEWAY_UPSTREAM__URL": "http://10.0.0.5:8000"}
            )

    @pytest.mark.parametrize(
        "url", ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:1"]
    )
    def test_loopback_plain_http_is_fine(self, tmp_path: Path, url: str) -> None:
        """An upstream on this machine may be plain HTTP."""
        settings = load_settings(_file(tmp_path), environ={"GATEWAY_UPSTREAM__URL": url})
        assert settings.relaxations() == []


class TestDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("500ms", 0.5),
            ("30s", 30),
            ("15m", 900),
            ("1h30m", 5400),
            ("365d", 31536000),
            ("2w", 1209600),
        ],
    )
    def test_parse(self, text: str, seconds: float) -> None:
        """Durations with units become seconds."""
        assert Duration.parse(text) == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["", "15", "m", "15x", "1h 30", "-5s", "15m trailing"])
    def test_reject(self, text: str) -> None:
        """Anything else is an error."""
        with pytest.raises(ValueError, match="duration"):
            Duration.parse(text)


class TestNormaliseHost:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("Platform.Example.NL.", "platform.example.nl"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]", "[::1]"),
        ],
    )
    def test_normalise(self, given: str, expected: str) -> None:
        """Case, trailing dot and IDN are normalised."""
        assert normalise_host(given) == expected

    @pytest.mark.parametrize("given", ["a b", "evil.com/x", "-x.example", "a..b", "x@y"])
    def test_reject(self, given: str) -> None:
        """Things that are not host names are refused."""
        with pytest.raises(ValueError, match="host"):
            normalise_host(given)


class TestExampleFile:
    def test_shipped_example_is_valid(self) -> None:
        """config/gateway.example.toml, which the README points to, passes validation once
        its one secret without a file (the session key) is given."""
        root = Path(__file__).resolve().parents[2]
        key = "A" * 43  # 32 bytes in base64url
        settings = load_settings(
            root / "config" / "gateway.example.toml", environ={"GATEWAY_SESSION__KEYS": key}
        )
        assert settings.server.public_hosts == ("platform.example.nl",)
        assert set(settings.oidc.issuers) == {"surfconext"}
        assert settings.relaxations() == []


KEY_A = "A" * 43  # 32 zero-ish bytes in base64url (no padding)
KEY_B = "B" * 43

ISSUERS = (
    BASE
    + f"""
[oidc.issuers.surf]
discovery_url = "https://connect.surfconext.nl/.well-known/openid-configuration"
client_id = "gateway"
client_secret = "file-secret"
scopes = ["openid", "profile"]
claims = "surfconext"

[oidc.issuers.staff]
discovery_url = "http://127.0.0.1:9400/.well-known/openid-configuration"
client_id = "gw"
audiences = ["platform-api"]

[session]
keys = ["{KEY_A}", "{KEY_B}"]
idle_timeout = "20m"
"""
)


class TestIssuers:
    def test_table_of_issuers_from_file(self, tmp_path: Path) -> None:
        """Each [oidc.issuers.NAME] table becomes one typed IssuerSettings."""
        settings = load_settings(_file(tmp_path, ISSUERS), environ={})
        surf = settings.oidc.issuers["surf"]
        assert surf.client_id == "gateway"
        assert surf.client_secret == Secret("file-secret")
        assert surf.scopes == ("openid", "profile")
        assert surf.claims == "surfconext"
        assert settings.oidc.issuers["staff"].audiences == ("platform-api",)
        assert settings.oidc.issuers["staff"].client_secret is None

    def test_issuer_from_environment(self, tmp_path: Path) -> None:
        """GATEWAY_OIDC__ISSUERS__NAME__KEY sets one key of one issuer, overriding the file."""
        settings = load_settings(
            _file(tmp_path, ISSUERS),
            environ={
                "GATEWAY_OIDC__ISSUERS__SURF__CLIENT_ID": "from-env",
                "GATEWAY_OIDC__ISSUERS__ENTREE__DISCOVERY_URL": "https://entree.example/.wk",
                "GATEWAY_OIDC__ISSUERS__ENTREE__CLIENT_ID": "e",
            },
        )
        assert settings.oidc.issuers["surf"].client_id == "from-env"
        assert settings.oidc.issuers["surf"].client_secret == Secret("file-secret")
        assert settings.oidc.issuers["entree"].discovery_url == "https://entree.example/.wk"

    def test_client_secret_file_variant(self, tmp_path: Path) -> None:
        """The issuer's client secret may come from a file named by _FILE."""
        secret = tmp_path / "surf-secret"
        secret.write_text("from-a-file\n")
        settings = load_settings(
            _file(tmp_path, ISSUERS),
            environ={"GATEWAY_OIDC__ISSUERS__SURF__CLIENT_SECRET_FILE": str(secret)},
        )
        assert settings.oidc.issuers["surf"].client_secret == Secret("from-a-file")

    def test_client_secret_never_shown(self, tmp_path: Path) -> None:
        """check-config output masks the issuer's secret and lists its keys by full name."""
        settings = load_settings(_file(tmp_path, ISSUERS), environ={})
        listed = dict(iter_settings(settings))
        assert "oidc.issuers.surf.client_id" in listed
        assert "file-secret" not in repr(listed)
        assert KEY_A not in repr(listed)

    @pytest.mark.parametrize(
        ("environ", "message"),
        [
            ({"GATEWAY_OIDC__ISSUERS__SURF__CLIENTID": "x"}, r"oidc\.issuers\.surf\.clientid"),
            ({"GATEWAY_OIDC__ISSUERS__SURF__SCOPES": "profile"}, r"scopes: must include"),
            ({"GATEWAY_OIDC__ISSUERS__SURF__ALGORITHMS": "HS256"}, r"'HS256' is not allowed"),
            ({"GATEWAY_OIDC__ISSUERS__SURF__ALGORITHMS": "none"}, r"'none' is not allowed"),
            (
                {"GATEWAY_OIDC__ISSUERS__SURF__DISCOVERY_URL": "http://idp.example/x"},
                r"plain http:// is refused",
            ),
            ({"GATEWAY_OIDC__ISSUERS__BAD-NAME__CLIENT_ID": "x"}, r"a name of lower-case"),
            ({"GATEWAY_OIDC__ISSUERS__NEW__CLIENT_ID": "x"}, r"new\.discovery_url: expected"),
            ({"GATEWAY_SERVER__HOST__X": "x"}, r"server\.host\.x: unknown setting"),
        ],
    )
    def test_bad_issuer_settings(
        self, tmp_path: Path, environ: dict[str, str], message: str
    ) -> None:
        """Each bad issuer setting is an error naming it."""
        with pytest.raises(SettingsError, match=message):
            load_settings(_file(tmp_path, ISSUERS), environ=environ)


class TestSessionSettings:
    def test_defaults(self, tmp_path: Path) -> None:
        """The cookie is __Host- prefixed; idle and absolute timeouts have closed defaults."""
        session = load_settings(_file(tmp_path), environ={}).session
        assert session.cookie_name == "__Host-gw_session"
        assert float(session.idle_timeout) == 1800
        assert float(session.absolute_timeout) == 12 * 3600

    def test_keys_are_a_secret_list(self, tmp_path: Path) -> None:
        """Several keys, in order (the first encrypts), held as secrets."""
        session = load_settings(_file(tmp_path, ISSUERS), environ={}).session
        assert session.keys == (Secret(KEY_A), Secret(KEY_B))
        assert KEY_A not in repr(session)

    def test_keys_from_environment_list(self, tmp_path: Path) -> None:
        """GATEWAY_SESSION__KEYS is a comma-separated or JSON list."""
        session = load_settings(
            _file(tmp_path), environ={"GATEWAY_SESSION__KEYS": f"{KEY_B},{KEY_A}"}
        ).session
        assert session.keys == (Secret(KEY_B), Secret(KEY_A))

    def test_keys_file_one_per_line(self, tmp_path: Path) -> None:
        """GATEWAY_SESSION__KEYS_FILE names a file with one key per line."""
        keys = tmp_path / "keys"
        keys.write_text(f"{KEY_A}\n\n{KEY_B}\n")
        session = load_settings(
            _file(tmp_path), environ={"GATEWAY_SESSION__KEYS_FILE": str(keys)}
        ).session
        assert session.keys == (Secret(KEY_A), Secret(KEY_B))

    def test_keys_required_with_issuers(self, tmp_path: Path) -> None:
        """Issuers without a session key cannot start."""
        text = ISSUERS.split("[session]")[0]
        with pytest.raises(SettingsError, match=r"session\.keys: at least one key"):
            load_settings(_file(tmp_path, text), environ={})

    @pytest.mark.parametrize(
        ("environ", "message"),
        [
            ({"GATEWAY_SESSION__KEYS": "short"}, r"key 1 is not 32 bytes"),
            ({"GATEWAY_SESSION__COOKIE_NAME": "gw_session"}, r"must start with __Host-"),
            ({"GATEWAY_SESSION__IDLE_TIMEOUT": "13h"}, r"must not exceed"),
            ({"GATEWAY_SESSION__REVOCATION_STORE": "sqlite"}, r"revocation_file: required"),
            ({"GATEWAY_THROTTLE__MAX_FAILURES": "0"}, r"throttle\.max_failures"),
            ({"GATEWAY_THROTTLE__MAX_TRACKED": "5"}, r"throttle\.max_tracked"),
        ],
    )
    def test_bad_session_settings(
        self, tmp_path: Path, environ: dict[str, str], message: str
    ) -> None:
        """Each bad session or throttle setting is an error naming it."""
        with pytest.raises(SettingsError, match=message):
            load_settings(_file(tmp_path), environ=environ)


class TestReturnOrigins:
    def test_valid(self, tmp_path: Path) -> None:
        """Exact https origins are accepted."""
        settings = load_settings(
            _file(tmp_path),
            environ={"GATEWAY_OIDC__RETURN_ORIGINS": "https://app.example.nl,https://a.nl:8443"},
        )
        assert settings.oidc.return_origins == ("https://app.example.nl", "https://a.nl:8443")

    @pytest.mark.parametrize(
        "origin", ["http://app.example.nl", "https://app.example.nl/", "https://*.example.nl"]
    )
    def test_invalid(self, tmp_path: Path, origin: str) -> None:
        """Anything but an exact https://host[:port] is refused."""
        with pytest.raises(SettingsError, match=r"oidc\.return_origins"):
            load_settings(_file(tmp_path), environ={"GATEWAY_OIDC__RETURN_ORIGINS": origin})


class TestIntrospectionSetting:
    def test_at_most_one_issuer(self, tmp_path: Path) -> None:
        """Opaque tokens name no issuer: introspection on two issuers is refused."""
        environ = {
            "GATEWAY_OIDC__ISSUERS__SURF__INTROSPECTION": "true",
            "GATEWAY_OIDC__ISSUERS__STAFF__INTROSPECTION": "true",
            "GATEWAY_OIDC__ISSUERS__STAFF__CLIENT_SECRET": "x",
        }
        with pytest.raises(SettingsError, match="at most one issuer"):
            load_settings(_file(tmp_path, ISSUERS), environ=environ)

    def test_needs_secret_and_audiences(self, tmp_path: Path) -> None:
        """Introspection needs client credentials and accepted audiences."""
        with pytest.raises(SettingsError, match="needs client_secret and audiences"):
            load_settings(
                _file(tmp_path, ISSUERS),
                environ={"GATEWAY_OIDC__ISSUERS__SURF__INTROSPECTION": "true"},
            )


class TestAuditSettings:
    def test_defaults_are_the_embedded_store(self, tmp_path: Path) -> None:
        """Without settings, audit events go to SQLite through a local spool."""
        settings = load_settings(_file(tmp_path), environ={})
        assert settings.audit.store == "sqlite"
        assert settings.audit.full_policy() == {}

    def test_opensearch_needs_urls(self, tmp_path: Path) -> None:
        """Choosing OpenSearch without a URL is an error naming the setting."""
        with pytest.raises(SettingsError, match=r"audit\.opensearch_urls: required"):
            load_settings(_file(tmp_path), environ={"GATEWAY_AUDIT__STORE": "opensearch"})

    def test_unknown_store(self, tmp_path: Path) -> None:
        """Only the two stores exist."""
        with pytest.raises(SettingsError, match=r"audit\.store: expected one of"):
            load_settings(_file(tmp_path), environ={"GATEWAY_AUDIT__STORE": "elastic"})

    @pytest.mark.parametrize("item", ["authentication", "logins=drop", "errors=maybe"])
    def test_bad_full_policy(self, tmp_path: Path, item: str) -> None:
        """Spool-full overrides must name a category and block or drop."""
        with pytest.raises(SettingsError, match=r"audit\.spool_full_policy"):
            load_settings(_file(tmp_path), environ={"GATEWAY_AUDIT__SPOOL_FULL_POLICY": item})

    def test_full_policy_override(self, tmp_path: Path) -> None:
        """A valid override is returned as a mapping."""
        settings = load_settings(
            _file(tmp_path), environ={"GATEWAY_AUDIT__SPOOL_FULL_POLICY": "authentication=drop"}
        )
        assert settings.audit.full_policy() == {"authentication": "drop"}

    def test_short_pseudonym_key(self, tmp_path: Path) -> None:
        """A pseudonymisation key shorter than 32 bytes is refused."""
        with pytest.raises(SettingsError, match=r"audit\.pseudonym_key: must be at least"):
            load_settings(_file(tmp_path), environ={"GATEWAY_AUDIT__PSEUDONYM_KEY": "short"})


class TestAuditSearchSettings:
    def test_defaults_pseudonymise_and_hide_groups_below_ten(self, tmp_path: Path) -> None:
        """Exports pseudonymise staff, statistics hide groups below 10, no person map."""
        audit = load_settings(_file(tmp_path), environ={}).audit
        assert audit.export_pseudonymise_staff is True
        assert audit.stats_min_group_size == 10
        assert audit.person_map_file is None

    def test_naming_staff_in_exports_is_a_logged_relaxation(self, tmp_path: Path) -> None:
        """Turning pseudonymisation off is listed among the relaxations."""
        settings = load_settings(
            _file(tmp_path), environ={"GATEWAY_AUDIT__EXPORT_PSEUDONYMISE_STAFF": "false"}
        )
        assert settings.audit.export_pseudonymise_staff is False
        assert any("export_pseudonymise_staff" in r for r in settings.relaxations())

    def test_min_group_size_is_read(self, tmp_path: Path) -> None:
        """A larger minimum group size is taken as given."""
        settings = load_settings(
            _file(tmp_path), environ={"GATEWAY_AUDIT__STATS_MIN_GROUP_SIZE": "25"}
        )
        assert settings.audit.stats_min_group_size == 25

    @pytest.mark.parametrize("size", ["1", "0", "-5"])
    def test_min_group_size_below_two_is_refused(self, tmp_path: Path, size: str) -> None:
        """A minimum group size that hides nothing is refused."""
        with pytest.raises(SettingsError, match=r"audit\.stats_min_group_size"):
            load_settings(_file(tmp_path), environ={"GATEWAY_AUDIT__STATS_MIN_GROUP_SIZE": size})

    def test_missing_person_map_is_refused(self, tmp_path: Path) -> None:
        """A person map file that does not exist is an error naming the setting."""
        with pytest.raises(SettingsError, match=r"audit\.person_map_file: no such file"):
            load_settings(
                _file(tmp_path),
                environ={"GATEWAY_AUDIT__PERSON_MAP_FILE": str(tmp_path / "absent.csv")},
            )


class TestAssertionSettings:
    def test_signing_key_required(self, tmp_path: Path) -> None:
        """Outside demo mode the identity assertion needs a configured key."""
        path = _file(tmp_path, BASE.replace('key_files = ["/etc/gateway/assertion-key.pem"]', ""))
        with pytest.raises(SettingsError, match=r"assertion\.key_files: at least one"):
            load_settings(path, environ={})

    def test_lifetime_bounds(self, tmp_path: Path) -> None:
        """An assertion lives between 5 seconds and 10 minutes."""
        with pytest.raises(SettingsError, match=r"assertion\.lifetime"):
            load_settings(_file(tmp_path), environ={"GATEWAY_ASSERTION__LIFETIME": "1h"})

    def test_methods_are_checked(self, tmp_path: Path) -> None:
        """Forwarded methods are upper-case names."""
        with pytest.raises(SettingsError, match=r"upstream\.methods"):
            load_settings(_file(tmp_path), environ={"GATEWAY_UPSTREAM__METHODS": "get"})


class TestRetentionSettings:
    def test_defaults_have_no_overrides(self, tmp_path: Path) -> None:
        """Without a [retention] section the defaults of DESIGN.md §4 apply."""
        settings = load_settings(_file(tmp_path), environ={})
        assert settings.retention.rules == ()

    def test_override_read_from_file(self, tmp_path: Path) -> None:
        """Rules given in the file are kept as written."""
        text = BASE + '\n[retention]\nrules = ["errors=14/60", "backbone=-/1000"]\n'
        settings = load_settings(_file(tmp_path, text), environ={})
        assert settings.retention.rules == ("errors=14/60", "backbone=-/1000")

    @pytest.mark.parametrize("item", ["errors", "logins=30/90", "errors=100/90", "errors=x/90"])
    def test_bad_rule_names_the_setting(self, tmp_path: Path, item: str) -> None:
        """A malformed rule is refused at load, naming retention.rules."""
        with pytest.raises(SettingsError, match=r"retention\.rules"):
            load_settings(_file(tmp_path), environ={"GATEWAY_RETENTION__RULES": item})


class TestHeadTimeout:
    def test_default_and_bounds(self, tmp_path: Path) -> None:
        """The request-head timeout defaults to 10 s and must stay between 500 ms and 5 min."""
        assert float(load_settings(_file(tmp_path), environ={}).server.request_head_timeout) == 10
        with pytest.raises(SettingsError, match=r"server\.request_head_timeout"):
            load_settings(_file(tmp_path), environ={"GATEWAY_SERVER__REQUEST_HEAD_TIMEOUT": "1h"})


class TestWorkers:
    def test_one_worker_by_default(self, tmp_path: Path) -> None:
        """Without the setting the gateway runs in one process."""
        assert load_settings(_file(tmp_path), environ={}).server.workers == 1

    @pytest.mark.parametrize("workers", ["0", "65"])
    def test_out_of_range(self, tmp_path: Path, workers: str) -> None:
        """Zero workers or more than 64 is refused, naming the setting."""
        with pytest.raises(SettingsError, match=r"server\.workers"):
            load_settings(_file(tmp_path), environ={"GATEWAY_SERVER__WORKERS": workers})

    def test_several_workers_need_shared_revocations(self, tmp_path: Path) -> None:
        """With login issuers, several workers need the sqlite revocation store."""
        with pytest.raises(SettingsError, match="revocation_store"):
            load_settings(_file(tmp_path, ISSUERS), environ={"GATEWAY_SERVER__WORKERS": "2"})

    def test_several_workers_with_sqlite_revocations(self, tmp_path: Path) -> None:
        """With revocations in a shared SQLite file several workers are accepted."""
        settings = load_settings(
            _file(tmp_path, ISSUERS),
            environ={
                "GATEWAY_SERVER__WORKERS": "2",
                "GATEWAY_SESSION__REVOCATION_STORE": "sqlite",
                "GATEWAY_SESSION__REVOCATION_FILE": str(tmp_path / "revoked.sqlite"),
            },
        )
        assert settings.server.workers == 2
