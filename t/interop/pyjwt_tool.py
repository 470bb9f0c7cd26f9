#!/usr/bin/python3
"""Keys and tokens made by PyJWT (Debian python3-jwt, python3-cryptography)
for t/interop_pyjwt.t and t/jwks_rotation.t.  Nothing here reimplements
JOSE: PyJWT signs, PyJWT exports the JWKs (to_jwk), cryptography makes the
keys and PEMs.

  pyjwt_tool.py keys DIR NAME...   NAME: rsa-K, ec-K, ed-K (K: the kid)
      writes DIR/K.pem (private), DIR/K.pub.pem and DIR/K.jwk (public JWK
      with kid, as an identity provider publishes it)
  pyjwt_tool.py jwks OUT K...      JWK Set {"keys": [...]} of DIR/K.jwk
  pyjwt_tool.py mint DIR < JSON    JSON: list of {"key": K | "secret:TEXT",
      "alg", "headers", "claims", "forge": "hmac-pem"}; prints the tokens,
      one per line ("forge": HMAC keyed with DIR/K.pub.pem, an attack
      PyJWT itself refuses to sign)
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import uuid

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def keys(d, names):
    for name in names:
        kind, kid = name.split("-", 1)
        if kind == "rsa":
            k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk, alg = json.loads(RSAAlgorithm.to_jwk(k.public_key())), "RS256"
        elif kind == "rsa1024":
            k = rsa.generate_private_key(public_exponent=65537, key_size=1024)
            jwk, alg = json.loads(RSAAlgorithm.to_jwk(k.public_key())), "RS256"
        elif kind == "ec":
            k = ec.generate_private_key(ec.SECP256R1())
            jwk, alg = json.loads(ECAlgorithm.to_jwk(k.public_key())), "ES256"
        elif kind == "ed":
            k = ed25519.Ed25519PrivateKey.generate()
            jwk, alg = json.loads(OKPAlgorithm.to_jwk(k.public_key())), "EdDSA"
        else:
            raise SystemExit("unknown key kind " + kind)

        jwk.update(kid=kid, use="sig", alg=alg)

        with open(os.path.join(d, kid + ".pem"), "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
        os.chmod(os.path.join(d, kid + ".pem"), 0o600)

        with open(os.path.join(d, kid + ".pub.pem"), "wb") as f:
            f.write(k.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo))

        with open(os.path.join(d, kid + ".jwk"), "w") as f:
            json.dump(jwk, f)


def jwks(out, kids):
    d = os.path.dirname(out)
    s = {"keys": []}
    for kid in kids:
        with open(os.path.join(d, kid + ".jwk")) as f:
            s["keys"].append(json.load(f))
    with open(out + ".tmp", "w") as f:
        json.dump(s, f, indent=2)
    os.rename(out + ".tmp", out)        # as a cron job would replace it


def mint(d, specs):
    now = int(time.time())
    for s in specs:
        claims = {"sub": "alice", "scope": "ha:read ha:write", "iat": now,
                  "exp": now + 300, "jti": uuid.uuid4().hex}
        claims.update(s.get("claims", {}))
        for k in [k for k, v in claims.items() if v is None]:
            del claims[k]
        headers = dict(s.get("headers", {}))
        key = s["key"]

        if s.get("forge") == "hmac-pem":
            # RS256 -> HS256 with the public key as the HMAC secret
            with open(os.path.join(d, key + ".pub.pem"), "rb") as f:
                secret = f.read()
            h = {"alg": "HS256", "typ": "JWT"}
            h.update(headers)
            inp = (b64u(json.dumps(h).encode()) + "." +
                   b64u(json.dumps(claims).encode()))
            sig = hmac.new(secret, inp.encode(), hashlib.sha256).digest()
            print(inp + "." + b64u(sig))
            continue

        if key.startswith("secret:"):
            k = key[len("secret:"):]
        else:
            with open(os.path.join(d, key + ".pem"), "rb") as f:
                k = serialization.load_pem_private_key(f.read(), None)

        print(jwt.encode(claims, k, algorithm=s["alg"], headers=headers))


def main():
    cmd = sys.argv[1]
    if cmd == "keys":
        keys(sys.argv[2], sys.argv[3:])
    elif cmd == "jwks":
        jwks(sys.argv[2], sys.argv[3:])
    elif cmd == "mint":
        mint(sys.argv[2], json.load(sys.stdin))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
