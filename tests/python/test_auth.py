"""Authentication: `--auth`, the OAuth2 token endpoint, Bingsan's HMAC
tokens (lifetime, restart, rotation, refresh) and external JWTs (RS256 and
ES256 against a JWKS file), through PyIceberg and raw HTTP.

Keys, clients and JWKS are made here with the standard library and the
`openssl` command (the JWT tests are skipped without it); tokens are minted
in Python from the documented format, so forged and expired ones are real
signatures, not garbage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from cluster import catalog_server
from harness import HTTP_TIMEOUT, MEASUREMENTS, BingsanServer, unique

CLIENT_ID = "spark"
SECRET = "s3cret-Pa55+word"
OTHER_ID = "trino"
OTHER_SECRET = "trino-secret"
#: Kept low so the debug binary answers the token endpoint quickly.
ITERATIONS = 1000
ISSUER = "https://idp.example/realms/lake"
AUDIENCE = "bingsan"
REALM_CHALLENGE = 'Bearer realm="bingsan"'
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


# ---------------------------------------------------------------- helpers
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def client_line(client_id: str, secret: str, iterations: int = ITERATIONS) -> str:
    """A clients-file line, exactly as docs/security.md's one-liner makes it."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"{client_id}:{salt.hex()}:{digest.hex()}:{iterations}"


def mint(key: bytes, subject: str, issued_at: int, expires_at: int) -> str:
    """A Bingsan token per docs/security.md: b64url(payload).b64url(HMAC(key, b64url(payload)))."""
    payload = b"\x01" + issued_at.to_bytes(8, "big") + expires_at.to_bytes(8, "big") + subject.encode()
    p = b64url(payload)
    return p + "." + b64url(hmac.new(key, p.encode(), hashlib.sha256).digest())


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True, timeout=60).stdout


def der_ecdsa_to_raw(der: bytes) -> bytes:
    """ECDSA-Sig-Value (DER SEQUENCE of r, s) to JWS's fixed r || s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += der[i + 2 : i + 2 + n].lstrip(b"\x00").rjust(32, b"\x00")
        i += 2 + n
    return out


class IdP:
    """An identity provider made with openssl: an RSA and a P-256 key, their JWKS, and a signer."""

    def __init__(self, d: Path) -> None:
        self.rsa = d / "rsa.pem"
        self.ec = d / "ec.pem"
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self.rsa))
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(self.ec))
        modulus = openssl("rsa", "-in", str(self.rsa), "-noout", "-modulus").decode().strip().split("=", 1)[1]
        point = openssl("ec", "-in", str(self.ec), "-pubout", "-outform", "DER")[-65:]
        assert point[0] == 4
        self.jwks = {
            "keys": [
                {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
                 "n": b64url(bytes.fromhex(modulus)), "e": "AQAB"},
                {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64url(point[1:33]), "y": b64url(point[33:])},
            ]
        }

    def sign(self, claims: dict, alg: str = "RS256", kid: str | None = None) -> str:
        kid = kid or {"RS256": "rsa-1", "ES256": "ec-1"}[alg]
        header = {"alg": alg, "typ": "JWT", "kid": kid}
        signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
        key = self.rsa if alg == "RS256" else self.ec
        sig = openssl("dgst", "-sha256", "-sign", str(key), stdin=signing_input)
        if alg == "ES256":
            sig = der_ecdsa_to_raw(sig)
        return signing_input.decode() + "." + b64url(sig)

    def claims(self, **overrides) -> dict:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}


class Keys:
    """Files a server's auth flags name."""

    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        self.clients = d / "clients"
        self.clients.write_text(
            "# test clients\n\n" + client_line(CLIENT_ID, SECRET) + "\n" + client_line(OTHER_ID, OTHER_SECRET) + "\n"
        )
        self.key_bytes = os.urandom(32)
        self.key = self.write_key("token.key", self.key_bytes)
        self.idp = IdP(d)
        self.jwks = d / "jwks.json"
        self.jwks.write_text(json.dumps(self.idp.jwks))

    def write_key(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.write_bytes(data)
        p.chmod(0o600)
        return p

    def args(self, *, key: Path | None = None, previous: Path | None = None, ttl: int | None = None,
             jwks: bool = True, clients: bool = True) -> list[str]:
        a = ["--auth"]
        if clients:
            a += ["--auth-clients-file", str(self.clients)]
        if key is not False:
            a += ["--auth-token-key-file", str(key or self.key)]
        if previous:
            a += ["--auth-token-previous-key-file", str(previous)]
        if ttl:
            a += ["--auth-token-ttl-secs", str(ttl)]
        if jwks:
            a += ["--auth-jwks-file", str(self.jwks), "--auth-jwt-issuer", ISSUER, "--auth-jwt-audience", AUDIENCE]
        return a


def get_token(server: BingsanServer, client_id: str = CLIENT_ID, secret: str = SECRET, basic: bool = False,
              **form) -> requests.Response:
    data = {"grant_type": "client_credentials", **form}
    auth = None
    if basic:
        auth = (client_id, secret)
    else:
        data.update(client_id=client_id, client_secret=secret)
    return requests.post(server.url("/v1/oauth/tokens"), data=data, auth=auth, timeout=HTTP_TIMEOUT)


def token_of(server: BingsanServer, **kw) -> str:
    r = get_token(server, **kw)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_401(r: requests.Response, *, invalid_token: bool | None = None, what: str = "") -> None:
    assert r.status_code == 401, f"{what}: {r.status_code} {r.text[:300]}"
    challenge = r.headers.get("WWW-Authenticate", "")
    assert challenge.startswith(REALM_CHALLENGE), f"{what}: WWW-Authenticate {challenge!r}"
    if invalid_token is not None:
        assert ('error="invalid_token"' in challenge) == invalid_token, f"{what}: {challenge!r}"
    if r.request.method != "HEAD":
        err = r.json()["error"]
        assert (err["type"], err["code"]) == ("NotAuthorizedException", 401), f"{what}: {r.text}"


def stop(server: BingsanServer) -> None:
    code = server.stop()
    assert code == 0, f"{server.name}: SIGTERM exit code {code}\n{server.log_tail()}"


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    # Required, not optional: without a JWT signer the JWT tests would vanish from the run.
    assert shutil.which("openssl"), "the openssl CLI is needed to sign test JWTs"
    return Keys(tmp_path_factory.mktemp("auth-keys"))


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, binary, keys):
    """--auth with clients, a token key and (with openssl) a JWKS; no prefix."""
    s = catalog_server(tmp_path_factory.mktemp("auth"), name="auth", binary=binary, extra_args=keys.args()).start()
    yield s
    stop(s)


@pytest.fixture(scope="module")
def auth_prefixed_server(tmp_path_factory, binary, keys):
    s = catalog_server(tmp_path_factory.mktemp("auth-prefixed"), name="auth-prefixed", binary=binary,
                       prefix="cat", extra_args=keys.args(jwks=False)).start()
    yield s
    stop(s)


@pytest.fixture
def idp(keys) -> IdP:
    return keys.idp


# ---------------------------------------------------------------- PyIceberg
def test_pyiceberg_client_credentials_end_to_end(auth_server):
    catalog = auth_server.catalog(credential=f"{CLIENT_ID}:{SECRET}")
    ns = unique()
    catalog.create_namespace(ns, {"owner": "spark"})
    assert (ns,) in catalog.list_namespaces()
    assert catalog.load_namespace_properties(ns) == {"owner": "spark"}
    catalog.drop_namespace(ns)
    assert (ns,) not in catalog.list_namespaces()


def test_pyiceberg_with_a_token(auth_server, auth_prefixed_server):
    for server in (auth_server, auth_prefixed_server):
        catalog = server.catalog(token=token_of(server, basic=True))
        ns = unique()
        catalog.create_namespace(ns)
        assert (ns,) in catalog.list_namespaces()


def test_pyiceberg_wrong_secret_raises_oauth_error(auth_server):
    from pyiceberg.exceptions import OAuthError

    for credential in (f"{CLIENT_ID}:wrong", f"nobody:{SECRET}", f"{OTHER_ID}:{SECRET}", SECRET):
        with pytest.raises(OAuthError, match="invalid_client"):
            auth_server.catalog(credential=credential)


def test_pyiceberg_without_credentials_is_unauthorized(auth_server):
    from pyiceberg.exceptions import UnauthorizedError

    with pytest.raises(UnauthorizedError):
        auth_server.catalog()
    with pytest.raises(UnauthorizedError):
        auth_server.catalog(token="not-a-token")


def test_pyiceberg_fetches_a_new_token_after_expiry(server_factory, keys):
    """PyIceberg answers a 401 by asking for a new token and retrying once."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField

    s = server_factory(name="short-ttl", shards=1, extra_args=keys.args(ttl=2, jwks=False))
    catalog = s.catalog(credential=f"{CLIENT_ID}:{SECRET}")
    first = catalog._session.auth.auth_manager.auth_header()  # noqa: SLF001 (the token in use)
    ns = unique()
    catalog.create_namespace(ns)
    time.sleep(3.2)
    r = requests.get(s.api("namespaces"), headers={"Authorization": first}, timeout=HTTP_TIMEOUT)
    assert_401(r, invalid_token=True, what="the first token, expired")
    assert (ns,) in catalog.list_namespaces()
    assert catalog._session.auth.auth_manager.auth_header() != first  # noqa: SLF001
    time.sleep(3.2)
    table = catalog.create_table((ns, "t"), Schema(NestedField(1, "id", LongType(), required=False)))
    assert table.name() == (ns, "t")


# ---------------------------------------------------------------- token endpoint
def test_token_response_shape(auth_server):
    for basic in (False, True):
        r = get_token(auth_server, basic=basic, scope="catalog")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers.get("Cache-Control") == "no-store"
        body = r.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "issued_token_type"}
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 3600
        assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
        assert body["access_token"].count(".") == 1


def test_token_endpoint_errors(auth_server):
    url = auth_server.url("/v1/oauth/tokens")
    form = "application/x-www-form-urlencoded"

    def post(data, headers=None, auth=None):
        return requests.post(url, data=data, headers=headers, auth=auth, timeout=HTTP_TIMEOUT)

    cases = [
        (post({"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "nope"}), 401, "invalid_client"),
        (post({"grant_type": "client_credentials"}, auth=(CLIENT_ID, "nope")), 401, "invalid_client"),
        (post({"grant_type": "client_credentials", "client_id": "ghost", "client_secret": SECRET}), 401, "invalid_client"),
        (post({"grant_type": "client_credentials"}), 401, "invalid_client"),
        (post({"grant_type": "password", "username": "a", "password": "b"}), 400, "unsupported_grant_type"),
        (post({"client_id": CLIENT_ID, "client_secret": SECRET}), 400, "invalid_request"),
        (post(json.dumps({"grant_type": "client_credentials"}), {"Content-Type": "application/json"}), 400,
         "invalid_request"),
        (post("grant_type=client_credentials&grant_type=client_credentials", {"Content-Type": form}), 400,
         "invalid_request"),
        (post({"grant_type": "client_credentials", "client_secret": SECRET}, auth=(CLIENT_ID, SECRET)), 400,
         "invalid_request"),
        (post({"grant_type": EXCHANGE, "subject_token": "x", "subject_token_type": ACCESS_TOKEN_TYPE,
               "actor_token": "y", "actor_token_type": ACCESS_TOKEN_TYPE}), 400, "invalid_request"),
    ]
    for i, (r, status, error) in enumerate(cases):
        assert r.status_code == status, f"case {i}: {r.status_code} {r.text}"
        body = r.json()
        assert body["error"] == error, f"case {i}: {body}"
        assert isinstance(body.get("error_description"), str)
        if status == 401:
            assert r.headers.get("WWW-Authenticate") == 'Basic realm="bingsan"'


def test_token_endpoint_is_off_without_clients(server, http):
    """The shared server has no --auth-clients-file (and no --auth)."""
    r = http.post(server.url("/v1/oauth/tokens"),
                  data={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "unsupported_grant_type"
    # Without --auth nothing is required.
    assert http.get(server.api("namespaces")).status_code == 200


def test_secrets_and_tokens_are_not_logged(server_factory, keys):
    s = server_factory(name="logs", shards=1, extra_args=keys.args(jwks=False) + ["--log", "debug"])
    token = token_of(s)
    assert get_token(s, secret="Wr0ng-" + SECRET).status_code == 401
    assert get_token(s, basic=True, secret="Wr0ng-basic").status_code == 401
    assert requests.get(s.api("namespaces"), headers=bearer(token), timeout=HTTP_TIMEOUT).status_code == 200
    assert requests.get(s.api("namespaces"), headers=bearer(token + "x"), timeout=HTTP_TIMEOUT).status_code == 401
    stop(s)
    log = s.log_text()
    assert "token refused" in log and "client authentication failed" in log
    for secret in (SECRET, "Wr0ng-", "Wr0ng-basic", token.split(".")[1], token.split(".")[0]):
        assert secret not in log, f"{secret!r} appears in the log"


def test_secret_checks_do_not_stall_the_shard(server_factory, keys, tmp_path):
    """PBKDF2 runs on the blocking pool: a one-shard server answers other
    requests while a slow secret check is in flight."""
    clients = tmp_path / "slow-clients"
    clients.write_text(client_line("slow", "slow-secret", iterations=200_000) + "\n")
    s = server_factory(name="slow-pbkdf2", shards=1,
                       extra_args=["--auth", "--auth-clients-file", str(clients), "--auth-token-key-file", str(keys.key)])
    done = threading.Event()
    result = {}

    def ask():
        result["r"] = get_token(s, client_id="slow", secret="slow-secret")
        done.set()

    started = time.monotonic()
    threading.Thread(target=ask, daemon=True).start()
    time.sleep(0.2)
    health = [requests.get(s.url("/health/live"), timeout=HTTP_TIMEOUT).status_code for _ in range(5)]
    answered_while_hashing = not done.is_set()
    assert done.wait(60), "the token request did not finish"
    took = time.monotonic() - started
    MEASUREMENTS.append(f"token endpoint, 200000 PBKDF2 iterations (debug build): {took:.2f}s")
    assert health == [200] * 5
    assert result["r"].status_code == 200, result["r"].text
    if took > 1.0:
        # Only meaningful when hashing takes long enough to overlap.
        assert answered_while_hashing, "health checks waited for the PBKDF2 check"


# ---------------------------------------------------------------- bearer check
def test_every_catalog_route_requires_a_token(auth_server, auth_prefixed_server):
    """Walks /v1/config itself and every endpoint it advertises, without a
    token and with a bad one (401 each), then with a good one (not 401)."""
    for server in (auth_server, auth_prefixed_server):
        token = token_of(server)
        cfg = requests.get(server.url("/v1/config"), headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert cfg.status_code == 200, cfg.text
        endpoints = cfg.json()["endpoints"]
        assert len(endpoints) >= 17, endpoints
        ns = unique("absent")
        routes = [("GET", "/v1/config")]
        for e in endpoints:
            method, template = e.split(" ", 1)
            path = template.replace("/{prefix}", f"/{server.prefix}" if server.prefix else "")
            path = path.replace("{namespace}", ns).replace("{table}", "t").replace("{view}", "v")
            routes.append((method, path))
        forged = mint(os.urandom(32), CLIENT_ID, int(time.time()), int(time.time()) + 600)
        with requests.Session() as http:
            for method, path in routes:
                body = b"{}" if method == "POST" else None
                what = f"{server.name} {method} {path}"
                headers = {"Content-Type": "application/json"}
                r = http.request(method, server.url(path), data=body, headers=headers, timeout=HTTP_TIMEOUT)
                assert_401(r, invalid_token=False, what=what + " (no token)")
                r = http.request(method, server.url(path), data=body, headers={**headers, **bearer(forged)},
                                 timeout=HTTP_TIMEOUT)
                assert_401(r, invalid_token=True, what=what + " (forged token)")
                r = http.request(method, server.url(path), data=body, headers={**headers, **bearer(token)},
                                 timeout=HTTP_TIMEOUT)
                assert r.status_code != 401, f"{what} (valid token): {r.status_code} {r.text[:300]}"


def test_open_routes_need_no_token(auth_server):
    for path in ("/health/live", "/health/ready", "/metrics"):
        r = requests.get(auth_server.url(path), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:200]}"
    # Unknown paths answer 401 too: nothing is revealed without a token.
    assert_401(requests.get(auth_server.url("/v1/nope"), timeout=HTTP_TIMEOUT), what="/v1/nope")
    r = requests.get(auth_server.url("/v1/nope"), headers=bearer(token_of(auth_server)), timeout=HTTP_TIMEOUT)
    assert r.status_code == 404


def test_forged_expired_and_malformed_tokens(auth_server):
    now = int(time.time())
    good = token_of(auth_server)
    payload, tag = good.split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[9:17] = (now + 10**6).to_bytes(8, "big")  # a later expiry under the original tag
    cases = {
        "forged (other key)": (mint(os.urandom(32), CLIENT_ID, now, now + 600), True),
        "tampered payload": (b64url(bytes(raw)) + "." + tag, True),
        "tampered tag": (payload + "." + ("A" if tag[0] != "A" else "B") + tag[1:], True),
        "truncated": (good[:-3], True),
        "two dots": (good + ".x", True),
        "no dot": ("garbage", True),
        "alg none JWT": (b64url(b'{"alg":"none"}') + "." + b64url(b'{"sub":"x"}') + ".", True),
    }
    url = auth_server.api("namespaces")
    for what, (token, invalid) in cases.items():
        r = requests.get(url, headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert_401(r, invalid_token=invalid, what=what)
    for what, header in {"Basic scheme": f"Basic {base64.b64encode(f'{CLIENT_ID}:{SECRET}'.encode()).decode()}",
                         "empty bearer": "Bearer ", "token without scheme": good}.items():
        assert_401(requests.get(url, headers={"Authorization": header}, timeout=HTTP_TIMEOUT), what=what)
    assert requests.get(url, headers=bearer(good), timeout=HTTP_TIMEOUT).status_code == 200


def test_expired_token_is_refused(auth_server, keys):
    now = int(time.time())
    expired = mint(keys.key_bytes, CLIENT_ID, now - 7200, now - 3600)
    r = requests.get(auth_server.api("namespaces"), headers=bearer(expired), timeout=HTTP_TIMEOUT)
    assert_401(r, invalid_token=True, what="expired")
    assert 'error_description="access token expired"' in r.headers["WWW-Authenticate"]
    assert r.json()["error"]["message"] == "access token expired"
    # The same key, minted by "another node" in Python: accepted while valid.
    fresh = mint(keys.key_bytes, "python-node", now, now + 60)
    assert requests.get(auth_server.api("namespaces"), headers=bearer(fresh), timeout=HTTP_TIMEOUT).status_code == 200
    # Issued far in the future (a node with a wrong clock): refused.
    future = mint(keys.key_bytes, CLIENT_ID, now + 3600, now + 7200)
    assert_401(requests.get(auth_server.api("namespaces"), headers=bearer(future), timeout=HTTP_TIMEOUT),
               invalid_token=True, what="future")


# ---------------------------------------------------------------- lifetime, restart, rotation, refresh
@pytest.mark.single_node(reason="restarts its server")
def test_tokens_survive_a_restart_with_a_key_file(server_factory, keys):
    s = server_factory(name="restart", shards=1, extra_args=keys.args(jwks=False))
    token = token_of(s)
    s.restart()
    assert requests.get(s.api("namespaces"), headers=bearer(token), timeout=HTTP_TIMEOUT).status_code == 200


@pytest.mark.single_node(reason="restarts its server")
def test_random_key_tokens_die_with_a_restart(server_factory, keys):
    s = server_factory(name="random-key", shards=1,
                       extra_args=["--auth", "--auth-clients-file", str(keys.clients)])
    assert "tokens will not survive a restart" in s.log_text()
    token = token_of(s)
    assert requests.get(s.api("namespaces"), headers=bearer(token), timeout=HTTP_TIMEOUT).status_code == 200
    s.restart()
    assert_401(requests.get(s.api("namespaces"), headers=bearer(token), timeout=HTTP_TIMEOUT),
               invalid_token=True, what="after restart")
    assert requests.get(s.api("namespaces"), headers=bearer(token_of(s)), timeout=HTTP_TIMEOUT).status_code == 200


def test_key_rotation_with_previous_key(server_factory, keys):
    new_key = keys.write_key("rotated.key", os.urandom(48))
    old = server_factory(name="old-key", shards=1, extra_args=keys.args(jwks=False))
    old_token = token_of(old)
    rotating = server_factory(name="rotating", shards=1,
                              extra_args=keys.args(key=new_key, previous=keys.key, jwks=False))
    rotated = server_factory(name="rotated", shards=1, extra_args=keys.args(key=new_key, jwks=False))
    new_token = token_of(rotating)

    def status(server, token):
        return requests.get(server.api("namespaces"), headers=bearer(token), timeout=HTTP_TIMEOUT).status_code

    assert status(rotating, old_token) == 200, "tokens of the previous key stay valid during a rotation"
    assert status(rotating, new_token) == 200
    assert status(rotated, new_token) == 200, "new tokens are signed with the new key"
    assert status(old, new_token) == 401
    assert status(rotated, old_token) == 401, "once the previous key is dropped, its tokens die"


def test_refresh_by_token_exchange(auth_server):
    """The refresh Iceberg's Java client performs: the current token as the
    subject, authenticated by itself as bearer or by client credentials."""
    url = auth_server.url("/v1/oauth/tokens")
    token = token_of(auth_server)
    form = {"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": ACCESS_TOKEN_TYPE,
            "scope": "catalog"}
    r = requests.post(url, data=form, headers=bearer(token), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    refreshed = r.json()["access_token"]
    assert r.json()["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert 0 < r.json()["expires_in"] <= 3600
    assert requests.get(auth_server.api("namespaces"), headers=bearer(refreshed), timeout=HTTP_TIMEOUT).status_code == 200
    # With Basic client credentials (as Java does once its token expired).
    r = requests.post(url, data=form, auth=(CLIENT_ID, SECRET), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    # No client authentication, or another client's credentials: refused.
    r = requests.post(url, data=form, timeout=HTTP_TIMEOUT)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    r = requests.post(url, data=form, auth=(OTHER_ID, OTHER_SECRET), timeout=HTTP_TIMEOUT)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")
    # A forged subject token presented as its own bearer.
    forged = mint(os.urandom(32), CLIENT_ID, int(time.time()), int(time.time()) + 60)
    r = requests.post(url, data={**form, "subject_token": forged}, headers=bearer(forged), timeout=HTTP_TIMEOUT)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")


# ---------------------------------------------------------------- external IdP (JWT)
def test_jwt_rs256_and_es256(auth_server, idp):
    url = auth_server.api("namespaces")
    for alg in ("RS256", "ES256"):
        token = idp.sign(idp.claims(), alg)
        assert requests.get(url, headers=bearer(token), timeout=HTTP_TIMEOUT).status_code == 200, alg
        catalog = auth_server.catalog(token=token)
        ns = unique(alg.lower())
        catalog.create_namespace(ns)
        assert (ns,) in catalog.list_namespaces()
    # aud as a list containing ours.
    token = idp.sign(idp.claims(aud=["other", AUDIENCE]), "ES256")
    assert requests.get(url, headers=bearer(token), timeout=HTTP_TIMEOUT).status_code == 200


def test_jwt_refusals(auth_server, idp):
    url = auth_server.api("namespaces")
    now = int(time.time())
    cases = {
        # Beyond the default 60 s of leeway.
        "expired": idp.sign(idp.claims(exp=now - 120)),
        "wrong issuer": idp.sign(idp.claims(iss="https://evil.example")),
        "wrong audience": idp.sign(idp.claims(aud="someone-else")),
        "no exp": idp.sign(idp.claims(exp=None)),
        "not yet valid": idp.sign(idp.claims(nbf=now + 3600)),
        "unknown kid": idp.sign(idp.claims(), "RS256", kid="nope"),
        "alg/key mismatch": idp.sign(idp.claims(), "ES256", kid="rsa-1"),
    }
    good = idp.sign(idp.claims(), "RS256")
    header, payload, sig = good.split(".")
    other = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other["sub"] = "admin"
    cases["tampered claims"] = f"{header}.{b64url(json.dumps(other).encode())}.{sig}"
    for what, token in cases.items():
        r = requests.get(url, headers=bearer(token), timeout=HTTP_TIMEOUT)
        assert_401(r, invalid_token=True, what=what)
        if what == "expired":
            assert "access token expired" in r.headers["WWW-Authenticate"]


def test_jwt_is_refused_without_jwks(auth_prefixed_server, idp):
    r = requests.get(auth_prefixed_server.api("namespaces"), headers=bearer(idp.sign(idp.claims())),
                     timeout=HTTP_TIMEOUT)
    assert_401(r, invalid_token=True, what="JWT on a server without JWKS")


# ---------------------------------------------------------------- start-up
def start_fails(binary: Path, tmp_path: Path, args: list[str]) -> str:
    """Runs `serve` with `args`; it must exit non-zero before serving. Returns its output."""
    cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
           "--warehouse", str(tmp_path / "wh"), "--shards", "1", *args]
    env = {**os.environ, "NO_COLOR": "1", "BINGSAN_LOG": "info"}
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"server started with {args}")
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode != 0, f"exit 0 with {args}:\n{out}"
    return out


def test_bad_configuration_stops_start_up(binary, tmp_path, keys):
    short = keys.write_key("short.key", b"x" * 31)
    bad_clients = tmp_path / "bad-clients"
    bad_clients.write_text("spark:nothex:00:10\n")
    dup = tmp_path / "dup-clients"
    dup.write_text(client_line("a", "x") + "\n" + client_line("a", "y") + "\n")
    empty_jwks = tmp_path / "jwks.json"
    empty_jwks.write_text('{"keys":[]}')
    cases = [
        (["--auth"], "needs a source of tokens"),
        (["--auth", "--auth-token-key-file", str(short)], "at least 32 bytes"),
        (["--auth", "--auth-token-key-file", str(tmp_path / "missing")], "cannot read"),
        (["--auth", "--auth-clients-file", str(bad_clients)], "line 1"),
        (["--auth", "--auth-clients-file", str(dup)], "twice"),
        (["--auth-token-ttl-secs", "0", "--auth-clients-file", str(keys.clients)], "must be positive"),
        (["--auth", "--auth-jwks-file", str(empty_jwks), "--auth-jwt-issuer", ISSUER, "--auth-jwt-audience", AUDIENCE],
         "no RS256 or ES256"),
        (["--auth", "--auth-jwks-file", str(empty_jwks)], "auth-jwt-issuer"),
        (["--auth-token-previous-key-file", str(keys.key)], "auth-token-key-file"),
    ]
    for args, expected in cases:
        out = start_fails(binary, tmp_path, args)
        assert expected in out, f"{args}: expected {expected!r} in:\n{out}"
        assert SECRET not in out


# ---------------------------------------------------------------- allocation
N = 300
WARMUP = 100


@pytest.mark.sled_only(reason="reads through tokio-postgres allocate per query (measured in test_metrics)")
def test_token_checks_allocate_nothing(auth_server, keys, request):
    """Hot reads with a Bingsan token or an ES256 JWT, and refusals, add no
    request-path allocations; RS256 is measured only (ring allocates)."""
    s = auth_server
    with s.raw() as c:
        assert c.request("POST", "/v1/namespaces", b'{"namespace":["hot_auth"]}',
                         headers=bearer(token_of(s))).status == 200
    idp = keys.idp
    exp = int(time.time()) + 600
    cases = {"bingsan token": (bearer(token_of(s)), 200, True), "no token": ({}, 401, True),
             "forged token": (bearer(mint(os.urandom(32), "x", int(time.time()), exp)), 401, True),
             "ES256 JWT": (bearer(idp.sign(idp.claims(exp=exp), "ES256")), 200, True),
             "RS256 JWT": (bearer(idp.sign(idp.claims(exp=exp), "RS256")), 200, False)}
    for name, (headers, status, must_be_zero) in cases.items():
        with s.raw() as c:
            for _ in range(WARMUP):
                assert c.request("GET", "/v1/namespaces/hot_auth", headers=headers).status == status
            before = s.metrics()
            for _ in range(N):
                assert c.request("GET", "/v1/namespaces/hot_auth", headers=headers).status == status
            after = s.metrics()
        allocs = after.sum("bingsan_request_allocs_total") - before.sum("bingsan_request_allocs_total")
        MEASUREMENTS.append(f"auth, {name}: GET /v1/namespaces/{{ns}} x{N}: bingsan_request_allocs_total +{allocs:.0f}")
        if must_be_zero:
            assert allocs == 0, f"{name}: {allocs:.0f} allocations on the request path over {N} requests"
