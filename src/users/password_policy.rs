//! What a new password must contain (`[email_identity] password_policy`),
//! served at `GET /_matrix/client/v3/password_policy` and in the
//! `m.password_policy` capability, and enforced on registration and
//! password change. No spec section: this follows MSC2000 as Synapse
//! implements it (its field names, its error codes, and its classes of
//! characters: ASCII digits, ASCII letters, anything else a symbol).

use serde_json::{json, Value};

use crate::{
    config::PasswordPolicyConfig,
    error::{Error, ErrorKind, Result},
};

/// The policy as clients read it.
pub fn describe(policy: &PasswordPolicyConfig) -> Value {
    json!({
        "m.minimum_length": policy.minimum_length,
        "m.require_digit": policy.require_digit,
        "m.require_symbol": policy.require_symbol,
        "m.require_lowercase": policy.require_lowercase,
        "m.require_uppercase": policy.require_uppercase,
    })
}

/// One rule: whether it is on, the characters it asks for, its code and
/// what it asks for, in words.
type Rule = (bool, fn(char) -> bool, &'static str, &'static str);

/// Checks `password` against `policy`, naming the first rule it breaks.
pub fn check(policy: &PasswordPolicyConfig, password: &str) -> Result<()> {
    let refuse = |code: &'static str, why: String| Err(Error::new(ErrorKind::PasswordPolicy(code), why));
    if password.chars().count() < policy.minimum_length as usize {
        return refuse(
            "M_PASSWORD_TOO_SHORT",
            format!("The password must be at least {} characters long", policy.minimum_length),
        );
    }
    let rules: [Rule; 4] = [
        (policy.require_digit, |c| c.is_ascii_digit(), "M_PASSWORD_NO_DIGIT", "a digit"),
        (policy.require_symbol, |c| !c.is_ascii_alphanumeric(), "M_PASSWORD_NO_SYMBOL", "a symbol"),
        (policy.require_lowercase, |c| c.is_ascii_lowercase(), "M_PASSWORD_NO_LOWERCASE", "a lowercase letter"),
        (policy.require_uppercase, |c| c.is_ascii_uppercase(), "M_PASSWORD_NO_UPPERCASE", "an uppercase letter"),
    ];
    for (required, class, code, what) in rules {
        if required && !password.chars().any(class) {
            return refuse(code, format!("The password must contain {what}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_is_named_by_its_code() {
        let policy = PasswordPolicyConfig {
            minimum_length: 8,
            require_digit: true,
            require_symbol: true,
            require_lowercase: true,
            require_uppercase: true,
        };
        let code = |password: &str| check(&policy, password).err().map(|error| error.errcode());
        assert_eq!(code("Ab1!"), Some("M_PASSWORD_TOO_SHORT"));
        assert_eq!(code("Abcdefg!"), Some("M_PASSWORD_NO_DIGIT"));
        assert_eq!(code("Abcdefg1"), Some("M_PASSWORD_NO_SYMBOL"));
        assert_eq!(code("ABCDEFG1!"), Some("M_PASSWORD_NO_LOWERCASE"));
        assert_eq!(code("abcdefg1!"), Some("M_PASSWORD_NO_UPPERCASE"));
        assert_eq!(code("Abcdéfg1"), None, "é is a symbol, as Synapse counts");
        assert!(check(&PasswordPolicyConfig::default(), "x").is_ok(), "no policy: anything");
    }
}
