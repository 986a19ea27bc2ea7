// Verifies a Sigstore bundle with npm's @sigstore/verify (sigstore-js), for terra's tests.
// Usage: node sigstore_verify.js BUNDLE PUBLIC_KEY_PEM DIGEST
//
// The trust material is the public key alone (no transparency log, certificate authority
// or timestamp authority: the thresholds are 0), looked up twice: by the bundle's key hint
// (what a key-based cosign bundle carries: base64 SHA-256 of the DER public key), and for
// any hint (so that the signature check itself decides). After the library accepts the
// envelope, the in-toto statement must carry cosign's signature predicate and name DIGEST
// (`alg:hex`) as a subject: the library checks the signature, not what was signed.
// Prints one line per check and exits 0 only when all pass.
'use strict';
const fs = require('fs');
const nodeCrypto = require('crypto');
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');

const [bundlePath, keyPath, digest] = process.argv.slice(2);
const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
const der = nodeCrypto
  .createPublicKey(fs.readFileSync(keyPath, 'utf8'))
  .export({ type: 'spki', format: 'der' });
const hint = nodeCrypto.createHash('sha256').update(der).digest('base64');
const root = {
  mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
  tlogs: [],
  certificateAuthorities: [],
  ctlogs: [],
  timestampAuthorities: [],
};
// tsaThreshold for 2.x, timestampThreshold for later lines.
const thresholds = {
  tlogThreshold: 0,
  ctlogThreshold: 0,
  tsaThreshold: 0,
  timestampThreshold: 0,
};
const anyHint = () => ({
  publicKey: nodeCrypto.createPublicKey({ key: der, format: 'der', type: 'spki' }),
  validFor: () => true,
});

let failed = false;
for (const [name, keys] of [
  ['by-hint', { [hint]: { rawBytes: der } }],
  ['any-hint', anyHint],
]) {
  try {
    new Verifier(toTrustMaterial(root, keys), thresholds).verify(toSignedEntity(bundle));
    console.log(`${name}: verified`);
  } catch (e) {
    failed = true;
    console.log(`${name}: refused: ${e.code || ''} ${e.message}`);
  }
}
if (!failed) {
  const statement = JSON.parse(bundle.content.dsseEnvelope.payload.toString('utf8'));
  const [alg, hex] = digest.split(':');
  if (statement.predicateType !== 'https://sigstore.dev/cosign/sign/v1') {
    failed = true;
    console.log(`statement: refused: predicateType ${statement.predicateType}`);
  } else if (!statement.subject.some((s) => s.digest && s.digest[alg] === hex)) {
    failed = true;
    console.log(`statement: refused: ${digest} is not a subject of ${JSON.stringify(statement.subject)}`);
  } else {
    console.log(`statement: names ${digest}`);
  }
}
process.exit(failed ? 1 : 0);
