//! Validation of the names the harness gives to containers and interfaces,
//! and of the host names containers are known by.

use crate::common::error::Error;

/// The longest interface name Linux accepts (`IFNAMSIZ` less the NUL).
pub(crate) const MAX_LEN: usize = libc::IFNAMSIZ - 1;

/// Checks that `name` can be an interface name and a hostname: 1 to 15
/// bytes of ASCII letters, digits, `-` and `_`, not starting with `-`.
pub(crate) fn validate(name: &str) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("a name must not be empty".into()));
    }
    if name.len() > MAX_LEN {
        return Err(invalid(format!(
            "it is {} bytes long; Linux interface names are at most {MAX_LEN} bytes",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(invalid(format!(
            "it contains {c:?}; use only ASCII letters, digits, '-' and '_'"
        )));
    }
    if name.starts_with('-') {
        return Err(invalid("a name must not start with '-'".into()));
    }
    Ok(())
}

/// The longest host name (RFC 1035 §2.3.4, in text form).
const MAX_HOST_LEN: usize = 253;
/// The longest label of a host name.
const MAX_LABEL_LEN: usize = 63;

/// Checks that `name` is a host name (RFC 1123 §2.1): labels of 1 to 63
/// ASCII letters, digits and `-`, neither starting nor ending with `-`,
/// joined by `.`, at most 253 bytes in all.
pub(crate) fn validate_host(name: &str) -> Result<(), Error> {
    const RULE: &str = "a host name is labels of 1 to 63 ASCII letters, digits and '-' \
                        (not first or last), joined by '.', at most 253 bytes";
    let invalid = |what: String| Error::InvalidName {
        name: name.to_owned(),
        reason: format!("{what}; {RULE}"),
    };
    if name.len() > MAX_HOST_LEN {
        return Err(invalid(format!("it is {} bytes long", name.len())));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("it has an empty label".into()));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(invalid(format!(
                "its label {label:?} is {} bytes long",
                label.len()
            )));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(invalid(format!("it contains {c:?}")));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(format!(
                "its label {label:?} starts or ends with '-'"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("web")]
    #[case("c-1_x")]
    #[case("fifteen-bytes15")]
    fn accepts(#[case] name: &str) {
        validate(name).unwrap();
    }

    #[rstest]
    #[case("", "empty")]
    #[case("sixteen-bytes-16", "16 bytes long")]
    #[case("a b", "contains ' '")]
    #[case("a/b", "contains '/'")]
    #[case("é", "contains 'é'")]
    #[case("-x", "start with '-'")]
    fn rejects(#[case] name: &str, #[case] reason: &str) {
        let err = validate(name).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }

    #[rstest]
    #[case("db")]
    #[case("db.lab.example")]
    #[case("3com")]
    #[case("a-b.c-d")]
    fn accepts_host_names(#[case] name: &str) {
        validate_host(name).unwrap();
    }

    #[rstest]
    #[case("", "an empty label")]
    #[case("a..b", "an empty label")]
    #[case("db.", "an empty label")]
    #[case("a_b", "contains '_'")]
    #[case("a b", "contains ' '")]
    #[case("-db", "\"-db\" starts or ends with '-'")]
    #[case("db-.lab", "\"db-\" starts or ends with '-'")]
    fn rejects_host_names(#[case] name: &str, #[case] reason: &str) {
        let err = validate_host(name).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
        assert!(err.ends_with("at most 253 bytes"), "{err}");
    }

    #[test]
    fn rejects_long_host_names_and_labels() {
        let label = "a".repeat(64);
        let err = validate_host(&format!("x.{label}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is 64 bytes long"), "{err}");
        let long = ["abc"; 64].join(".");
        let err = validate_host(&long).unwrap_err().to_string();
        assert!(err.contains("it is 255 bytes long"), "{err}");
    }
}
