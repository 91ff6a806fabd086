//! The `labels_raw` column: Prometheus label syntax, `name="value",…`.
//!
//! After CSV unquoting, `labels_raw` reads like the inside of a Prometheus
//! selector: `DCGM_FI_DRIVER_VERSION="535.129.03",Hostname="node-1",…`,
//! optionally wrapped in `{}`. Values are double-quoted with the exposition
//! format's escapes `\\`, `\"` and `\n`; an unknown escape is kept as
//! written. Values may hold commas, `=` and braces. Whitespace between
//! pairs is allowed, and so is a trailing comma. A name is any run of
//! characters other than `=`, `,`, `"`, braces and whitespace: exporters
//! write odd names more often than readers should refuse them.

/// The pairs of `text`, in order, or why it is not label syntax.
pub(crate) fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut rest = text.trim();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner
            .strip_suffix('}')
            .ok_or("`{` without a closing `}`")?
            .trim();
    }
    let mut pairs = Vec::new();
    while !rest.is_empty() {
        let name_len = rest
            .find(|c: char| matches!(c, '=' | ',' | '"' | '{' | '}') || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() {
            return Err(format!("expected a label name at {:?}", excerpt(rest)));
        }
        rest = rest[name_len..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected `=` after `{name}`"))?
            .trim_start();
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of `{name}` is not quoted"))?;
        let (value, after) =
            unquote(rest).ok_or_else(|| format!("the value of `{name}` is never closed"))?;
        pairs.push((name.to_string(), value));
        rest = after.trim_start();
        if !rest.is_empty() {
            rest = rest
                .strip_prefix(',')
                .ok_or_else(|| format!("expected `,` after the value of `{name}`"))?
                .trim_start();
        }
    }
    Ok(pairs)
}

/// A quoted value's text up to its closing quote, unescaped, and what
/// follows the quote; `None` when it is never closed.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                'n' => value.push('\n'),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}

/// The start of `text`, for an error message.
fn excerpt(text: &str) -> String {
    text.chars().take(20).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `want` is `name=value;…` for pairs, or `!` and a piece of the error.
    fn check(input: &str, want: &str) {
        let got = match parse(input) {
            Ok(pairs) => pairs
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
            Err(e) => format!("!{e}"),
        };
        if let Some(needle) = want.strip_prefix('!') {
            assert!(
                got.starts_with('!') && got.contains(needle),
                "{input:?}: {got}"
            );
        } else {
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn parses_prometheus_labels() {
        check(r#"a="1",b="2""#, "a=1;b=2");
        check(r#"{a="1", b="2",}"#, "a=1;b=2");
        check(r#"  a = "1" ,  b="" "#, "a=1;b=");
        check("", "");
        check("{}", "");
        check(r#"path="a,b=c{d}""#, "path=a,b=c{d}");
        check(r#"q="say \"hi\"""#, r#"q=say "hi""#);
        check(r#"w="C:\\dir""#, r"w=C:\dir");
        check(r#"n="two\nlines""#, "n=two\nlines");
        check(r#"u="\t stays""#, r"u=\t stays");
        check(r#"ü="ünïcode""#, "ü=ünïcode");
        check(r#"a="1",a="2""#, "a=1;a=2");
    }

    #[test]
    fn says_what_is_wrong() {
        check(r#"a="1" b="2""#, "!expected `,` after the value of `a`");
        check(r#"a=1"#, "!the value of `a` is not quoted");
        check(r#"a"1""#, "!expected `=` after `a`");
        check(r#"a="1"#, "!the value of `a` is never closed");
        check(r#"a="1\"#, "!never closed");
        check(r#",a="1""#, "!expected a label name");
        check(r#"{a="1""#, "!without a closing `}`");
    }
}
