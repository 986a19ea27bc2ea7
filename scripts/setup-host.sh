#!/usr/bin/env bash
# Installs what Terra's lab and tests need on a Debian/Ubuntu host: QEMU, a kernel with
# modules, btrfs-progs, a static busybox, the filesystem tools the probe tests compare
# against, and the musl target for the static stage0.
set -euo pipefail

PACKAGES=(
  # the lab: QEMU, Debian's kernel, the demo root's filesystem and busybox
  qemu-system-x86 linux-image-amd64 btrfs-progs busybox-static cpio
  # the probe tests' reference tools (mkfs.*, blkid, partx, systemd-repart)
  dosfstools xorriso squashfs-tools fdisk e2fsprogs zstd xz-utils util-linux mount systemd
  # what a device holds before a data volume may format it (init/src/probe/contents.rs): the
  # formats' own tools make the images blkid and the prober read; cryptsetup makes LUKS
  xfsprogs lvm2 bcache-tools cryptsetup-bin
  # networking: DHCP server for the namespace tests, ip(8)
  dnsmasq-base iproute2 iputils-ping
  # iSCSI: tgtd as the target, libiscsi as a reference initiator
  tgt libiscsi-bin
  # the controller's shared database in its tests (a server the tests start and stop), and
  # a real browser for its fleet page (headless Chromium: load, screenshot, DOM)
  postgresql chromium
  # OCI: a registry, skopeo/umoci to push images and to compare unpacks, buildah (and GNU
  # tar, umoci, skopeo) to make the image corpus the unpack tests compare; openssl makes
  # the keys and signatures of the signed-image tests (builder/tests/it/oci_signed.rs)
  docker-registry skopeo umoci buildah tar openssl
  # Go's archive/tar as the reference layer reader (builder/tests/it/oci_common/go_tar.rs
  # builds a small lister with it; its test archives are read by both readers); Go's x/crypto
  # (scrypt, NaCl secretbox) seals the keys in cosign's encrypted format that `terra sign`
  # opens (builder/tests/it/oci_common/cosign_keygen.go; Debian packages no cosign)
  golang-go golang-golang-x-crypto-dev
  # npm's @sigstore/verify (sigstore-js), installed by the tests into target/lab, verifies the
  # Sigstore bundles `terra sign` attaches (builder/tests/it/oci_common/sigstore_verify.js)
  nodejs npm
  # the Debian systemd root images (tests-qemu/src/debian.rs)
  debootstrap
  # boot media: ISO (GRUB BIOS+EFI images, FAT, xorriso), UEFI firmware, iPXE ROMs, pxelinux
  grub-common grub-pc-bin grub-efi-amd64-bin mtools ovmf ipxe-qemu pxelinux syslinux-common
  # Secure Boot: systemd's EFI stub for `terra uki`, sbsign/sbverify (run under faketime for
  # a fixed signing time), and python3-venv for the venv under target/lab where the UKI test
  # installs PyPI's virt-firmware (not in Debian 12) to enroll its keys into OVMF's variables
  systemd-boot-efi sbsigntool faketime python3-venv
  # kernels from kernel-config/ (CI checks the fragments against Debian's linux-source)
  linux-source build-essential bc bison flex libssl-dev libelf-dev openssl
)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup-host: need root to run: $*" >&2; exit 1; fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  # NodeSource's nodejs carries npm and conflicts with Debian's npm package.
  if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=300
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"
fi

if command -v rustup >/dev/null; then
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
    || rustup target add x86_64-unknown-linux-musl \
    || echo "setup-host: musl target unavailable; stage0 falls back to static glibc" >&2
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt || true
fi
