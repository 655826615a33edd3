//! `epa config --print-default`: the default configuration as TOML with every key's documentation
//! (its doc comment in the source, read through the config types' JSON schema) above it, so the
//! options are documented in one place that cannot drift from the code.

use serde_json::Value;

/// Follows `$ref`, and the `anyOf`/`allOf` wrappers schemars writes for `Option<T>` and newtypes, to
/// the schema that has the properties or the enum values.
fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        if let Some(d) = root.get("$defs").and_then(|d| d.get(name)) {
            return resolve(d, root);
        }
    }
    for wrap in ["allOf", "anyOf"] {
        if let Some(list) = node.get(wrap).and_then(Value::as_array)
            && node.get("properties").is_none()
            && let Some(inner) = list.iter().find(|s| s.get("type").and_then(Value::as_str) != Some("null"))
        {
            return resolve(inner, root);
        }
    }
    node
}

/// Every schema a property can be found in: the node itself and, for tagged enums, each variant.
fn variants<'a>(node: &'a Value, root: &'a Value) -> Vec<&'a Value> {
    let node = resolve(node, root);
    let mut out = vec![node];
    for key in ["oneOf", "anyOf", "allOf"] {
        for v in node.get(key).and_then(Value::as_array).into_iter().flatten() {
            out.extend(variants(v, root));
        }
    }
    out
}

/// The schema of property `key` of `node` (searching enum variants), with its own description.
fn property<'a>(node: &'a Value, key: &str, root: &'a Value) -> Option<&'a Value> {
    variants(node, root).into_iter().find_map(|v| v.get("properties").and_then(|p| p.get(key)))
}

/// The element schema of an array property (for `[[loss.terms]]`).
fn items<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    let node = resolve(node, root);
    node.get("items").map(|i| resolve(i, root)).unwrap_or(node)
}

/// A property's description, plus its documented enum values (`"a": what a means; …`).
fn describe(prop: &Value, root: &Value) -> Option<String> {
    let mut text = prop.get("description").and_then(Value::as_str).map(str::to_owned);
    let target = resolve(prop, root);
    if text.is_none() {
        text = target.get("description").and_then(Value::as_str).map(str::to_owned);
    }
    let values: Vec<String> = target
        .get("oneOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let name = v.get("const").and_then(Value::as_str)?;
            Some(match v.get("description").and_then(Value::as_str) {
                Some(d) => format!("\"{name}\": {}", d.replace('\n', " ")),
                None => format!("\"{name}\""),
            })
        })
        .collect();
    if text.is_none()
        && let Some(tag) = prop.get("const").and_then(Value::as_str)
    {
        // The tag of an internally tagged enum (`name = "epa"` in `[[loss.terms]]`).
        text = Some(format!("Which variant this table is (here `{tag}`; the choices are listed at the top)."));
    }
    match (text, values.is_empty()) {
        (Some(t), true) => Some(t),
        (Some(t), false) => Some(format!("{t}\n{}", values.join("\n"))),
        (None, false) => Some(values.join("\n")),
        (None, true) => None,
    }
}

/// `toml_text` (as `toml::to_string_pretty` writes it) with each table's and key's description from
/// `schema` written as comments above it. Keys without a description are returned in `missing`.
pub fn annotate(toml_text: &str, schema: &Value) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut missing = Vec::new();
    let mut table: Vec<String> = Vec::new();
    let comment = |out: &mut String, text: &str| {
        for line in text.lines() {
            out.push_str(&format!("# {line}\n"));
        }
    };
    // The schema of the current table.
    let at = |path: &[String]| -> Option<&Value> {
        let mut node = schema;
        for part in path {
            node = items(property(node, part, schema)?, schema);
        }
        Some(node)
    };
    for line in toml_text.lines() {
        let t = line.trim();
        if let Some(header) = t
            .strip_prefix("[[")
            .and_then(|h| h.strip_suffix("]]"))
            .or_else(|| t.strip_prefix('[').and_then(|h| h.strip_suffix(']')))
        {
            table = header.split('.').map(str::to_owned).collect();
            let (parent, last) = table.split_at(table.len() - 1);
            match at(parent).and_then(|p| property(p, &last[0], schema)).and_then(|p| describe(p, schema)) {
                Some(d) => comment(&mut out, &d),
                None => missing.push(header.to_string()),
            }
        } else if let Some((key, _)) = t.split_once(" = ")
            && !t.starts_with('#')
        {
            let key = key.trim().trim_matches('"');
            match at(&table).and_then(|p| property(p, key, schema)).and_then(|p| describe(p, schema)) {
                Some(d) => comment(&mut out, &d),
                None => missing.push(table.iter().cloned().chain([key.to_string()]).collect::<Vec<_>>().join(".")),
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, missing)
}

#[cfg(test)]
mod tests {
    use crate::train::TrainConfig;

    #[test]
    fn every_default_key_is_documented() {
        let body = toml::to_string_pretty(&TrainConfig::default()).unwrap();
        let schema = serde_json::to_value(schemars::schema_for!(TrainConfig)).unwrap();
        let (text, missing) = super::annotate(&body, &schema);
        assert!(missing.is_empty(), "keys without a doc comment: {missing:?}");
        // The annotated text is still the same configuration.
        let back: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, TrainConfig::default());
    }
}
