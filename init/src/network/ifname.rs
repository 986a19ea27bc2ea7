//! Link names: what the kernel accepts as one, and dracut's `ifname=<name>:<mac>`, which
//! gives the link with that MAC a stable name before anything uses it (dracut leaves it to
//! udev; stage0 renames over netlink, see `links.rs`).

use super::types::parse_mac;

/// The kernel's buffer for a name, with its NUL (`IFNAMSIZ`, include/uapi/linux/if.h).
pub const IFNAMSIZ: usize = 16;

/// A name the kernel takes for a link (`dev_valid_name`, net/core/dev.c): 1 to 15 bytes,
/// not `.` or `..`, no `/`, `:` or white space. `%` is refused too: the kernel would read
/// it as a pattern (`bond%d`) and pick a name we did not ask for.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < IFNAMSIZ
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'%'))
}

/// What a name must look like, for messages.
pub const IFNAME_EXPECTED: &str =
    "an interface name of 1 to 15 characters without '/', ':', '%' or spaces";

/// `ifname=<name>:<mac>`: the link with this hardware address is to be called `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// The stable name.
    pub name: String,
    /// The link's hardware address.
    pub mac: [u8; 6],
}

/// Parses `ifname=`'s value, `<name>:<aa:bb:cc:dd:ee:ff>` (dracut.cmdline(7)); the MAC in
/// any case, with `:` or `-`.
pub fn parse_ifname(v: &str) -> Result<Rename, &'static str> {
    const EXPECTED: &str = "<name>:<aa:bb:cc:dd:ee:ff>, the name of 1 to 15 characters \
         without '/', ':', '%' or spaces";
    let (name, mac) = v.split_once(':').ok_or(EXPECTED)?;
    if !valid_ifname(name) {
        return Err(EXPECTED);
    }
    let mac = parse_mac(mac).ok_or(EXPECTED)?;
    Ok(Rename {
        name: name.to_string(),
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_the_kernel_takes() {
        for ok in [
            "eth0",
            "bond0",
            "lan-0",
            "vlan0005",
            "eth0.5",
            "a",
            "fifteen-chars-x",
        ] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "sixteen-chars-xx",
            "a/b",
            "a:b",
            "a b",
            "bond%d",
            "tab\t",
            "é",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }

    #[test]
    fn ifname_values() {
        assert_eq!(
            parse_ifname("lan0:52:54:00:AB:cd:01"),
            Ok(Rename {
                name: "lan0".into(),
                mac: [0x52, 0x54, 0, 0xab, 0xcd, 1]
            })
        );
        assert!(parse_ifname("lan0:52-54-00-ab-cd-01").is_ok());
        for bad in [
            "",
            "lan0",
            "lan0:",
            ":52:54:00:ab:cd:01",
            "lan0:52:54:00:ab:cd",
            "lan0:52:54:00:ab:cd:01:02",
            "a/b:52:54:00:ab:cd:01",
            "sixteen-chars-xx:52:54:00:ab:cd:01",
        ] {
            assert!(parse_ifname(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_ifname_values_never_panic(v in "\\PC{0,40}") {
            if let Ok(r) = parse_ifname(&v) {
                prop_assert!(valid_ifname(&r.name));
            }
        }
    }
}
