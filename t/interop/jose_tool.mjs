// Keys and tokens made by node's jose package (t/interop/node_modules, npm
// ci from package-lock.json) for t/interop_jose.t.  jose makes the keys,
// exports them (exportSPKI, exportJWK) and signs (SignJWT).
//
//   node jose_tool.mjs keys DIR ALG:KID...   ALG: RS256, EdDSA, ES256
//       writes DIR/KID.pub.pem, DIR/KID.jwk (public, with kid, alg, use)
//       and DIR/KID.private.jwk (for signing later)
//   node jose_tool.mjs jwks OUT KID...       {"keys": [...]}
//   node jose_tool.mjs mint DIR < JSON       list of {kid, alg, typ, iss,
//       aud, sub, scope, scp, upstreams}; prints one token per line

import { readFileSync, writeFileSync, renameSync, chmodSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { randomUUID } from 'node:crypto';
import {
    generateKeyPair, exportSPKI, exportJWK, importJWK, SignJWT
} from 'jose';

const [cmd, dir, ...rest] = process.argv.slice(2);

if (cmd === 'keys') {
    for (const spec of rest) {
        const [alg, kid] = spec.split(':');
        const { publicKey, privateKey } =
            await generateKeyPair(alg, { extractable: true });
        writeFileSync(join(dir, kid + '.pub.pem'), await exportSPKI(publicKey));
        const pub = await exportJWK(publicKey);
        writeFileSync(join(dir, kid + '.jwk'),
                      JSON.stringify({ ...pub, kid, alg, use: 'sig' }));
        const priv = join(dir, kid + '.private.jwk');
        writeFileSync(priv, JSON.stringify(await exportJWK(privateKey)));
        chmodSync(priv, 0o600);
    }

} else if (cmd === 'jwks') {
    const keys = rest.map(kid => JSON.parse(
        readFileSync(join(dirname(dir), kid + '.jwk'), 'utf8')));
    writeFileSync(dir + '.tmp', JSON.stringify({ keys }, null, 2));
    renameSync(dir + '.tmp', dir);

} else if (cmd === 'mint') {
    const specs = JSON.parse(readFileSync(0, 'utf8'));
    for (const s of specs) {
        const jwk = JSON.parse(
            readFileSync(join(dir, s.kid + '.private.jwk'), 'utf8'));
        const key = await importJWK(jwk, s.alg);
        const claims = { scope: s.scope ?? 'ha:read ha:write' };
        if (s.scp !== undefined) { delete claims.scope; claims.scp = s.scp; }
        if (s.upstreams) claims.ha_upstreams = s.upstreams;
        let t = new SignJWT(claims)
            .setProtectedHeader({ alg: s.alg, kid: s.signkid ?? s.kid,
                                  typ: s.typ ?? 'at+jwt' })
            .setSubject(s.sub ?? 'alice')
            .setJti(randomUUID())
            .setIssuedAt()
            .setExpirationTime('5m');
        if (s.iss) t = t.setIssuer(s.iss);
        if (s.aud) t = t.setAudience(s.aud);
        console.log(await t.sign(key));
    }

} else {
    console.error('usage: jose_tool.mjs keys|jwks|mint DIR ...');
    process.exit(2);
}
