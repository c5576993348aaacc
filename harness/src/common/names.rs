//! Validation of the names the harness gives to containers and interfaces.

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
}
