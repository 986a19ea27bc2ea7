//! Where cosign keeps a key-based signature in the classic format, and how its manifest
//! reads: a manifest tagged `<alg>-<hex>.sig` in the image's repository (or layout), whose
//! layers are simple-signing payloads, each with its base64 DER ECDSA signature in the
//! `dev.cosignproject.cosign/signature` annotation. No I/O: the registry and layout code
//! fetch the bytes and hand them here.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::simplesigning;
use crate::oci::blob::Digest;

/// The annotation holding a payload layer's signature (base64 of an ASN.1 DER ECDSA
/// signature).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A signature manifest lists at most this many payload layers that we look at: each one
/// costs a fetch and a signature check per key, and a signer adds one per `cosign sign`.
pub const MAX_SIGNATURES: usize = 32;

/// The tag cosign stores an image's signatures under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}-{}.sig", digest.algorithm().name(), digest.hex())
}

/// One payload layer of a signature manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The payload blob's digest.
    pub digest: Digest,
    /// Its size (checked against [`simplesigning::MAX_PAYLOAD`]).
    pub size: u64,
    /// The signature annotation, when the layer has one.
    pub signature: Option<String>,
}

#[derive(Deserialize)]
struct WireManifest {
    #[serde(default)]
    layers: Vec<WireDescriptor>,
}

#[derive(Deserialize)]
struct WireDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The simple-signing layers of a signature manifest (other layers, e.g. attestations a
/// tool put beside them, are skipped). The error says what is malformed.
pub fn signature_layers(manifest: &[u8]) -> Result<Vec<SignatureLayer>, String> {
    let m: WireManifest = serde_json::from_slice(manifest)
        .map_err(|e| format!("malformed signature manifest: {e}"))?;
    let mut out = Vec::new();
    for l in m
        .layers
        .into_iter()
        .filter(|l| l.media_type == simplesigning::MEDIA_TYPE)
        .take(MAX_SIGNATURES)
    {
        let digest = l
            .digest
            .parse::<Digest>()
            .map_err(|e| format!("signature manifest layer: {e}"))?;
        out.push(SignatureLayer {
            digest,
            size: l.size,
            signature: l.annotations.get(SIGNATURE_ANNOTATION).cloned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // As skopeo 1.9 (containers/image 5.23) wrote it to a registry.
    const SKOPEO: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:f0e48b37a18ebe1c518aba13a741e28c3b9a3b6e4e3adefb1262272fff27b273","size":153},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:0a4b1c133b519a4c7cda4dcf0ce10032514e52fb3e423d3185ab39fe655a1d39","size":233,"annotations":{"dev.cosignproject.cosign/signature":"MEQCIHP0kkSOZSlwV0QsFQUvwRSGrHG1ckonoRbweU+jE5sFAiAasVW+LqFZB9wgVe4Cx1ZpdUeFcFCSuneWCLiP3GAxKA=="}}]}"#;

    #[test]
    fn tag_and_layers() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.hex()));
        let layers = signature_layers(SKOPEO.as_bytes()).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].size, 233);
        assert!(layers[0]
            .signature
            .as_deref()
            .unwrap()
            .starts_with("MEQCIH"));
        let other = SKOPEO.replace("simplesigning", "attestation");
        assert!(signature_layers(other.as_bytes()).unwrap().is_empty());
        let bad = SKOPEO.replace("sha256:0a4b", "sha256:0A4B");
        assert!(signature_layers(bad.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_manifest_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = signature_layers(&bytes);
        }
    }
}
