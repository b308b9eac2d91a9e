//! `--set KEY=VALUE`: a recipe with some keys changed from the command line, for sweeps and
//! ablations without a copy of the file per variant (`--set grpo.iterations=4 --set
//! output_dir=\"runs/mu4\"`). The value is TOML (`4`, `1e-3`, `true`, `[1, 2]`, `"text"`); a bare
//! word that is not TOML is taken as a string (`--set grpo.routing_replay=rollout`). The changed
//! recipe is then checked like any other, so a wrong key or value is the usual one-line error.

/// `text` with every `KEY=VALUE` of `sets` applied, as TOML text.
pub fn apply(text: &str, sets: &[String]) -> Result<String, String> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("invalid TOML: {}", e.message()))?;
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| format!("--set {set}: expected KEY=VALUE, e.g. grpo.iterations=4"))?;
        let path: Vec<&str> = key.trim().split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("--set {set}: \"{key}\" is not a dotted key"));
        }
        let value = parse_value(value.trim());
        let (last, tables) = path.split_last().expect("at least one part");
        let mut at = &mut table;
        for (i, part) in tables.iter().enumerate() {
            let entry = at
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = entry
                .as_table_mut()
                .ok_or_else(|| format!("--set {set}: {} is not a table", path[..=i].join(".")))?;
        }
        at.insert(last.to_string(), value);
    }
    toml::to_string(&table).map_err(|e| e.to_string())
}

/// A TOML value, or the text as a string when it is not one.
fn parse_value(s: &str) -> toml::Value {
    format!("v = {s}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_typed_values_and_creates_sections() {
        let text = "kind = \"grpo\"\n[grpo]\niterations = 1\nbeta = 0.0\n";
        let sets = [
            "grpo.iterations=4".to_string(),
            "grpo.routing_replay=rollout".to_string(),
            "grpo.beta = 1e-2".to_string(),
            "data.levels=[5, 6]".to_string(),
            "output_dir=\"runs/x\"".to_string(),
        ];
        let t: toml::Table = apply(text, &sets).unwrap().parse().unwrap();
        let g = t["grpo"].as_table().unwrap();
        assert_eq!(g["iterations"].as_integer(), Some(4));
        assert_eq!(g["routing_replay"].as_str(), Some("rollout"));
        assert_eq!(g["beta"].as_float(), Some(0.01));
        assert_eq!(t["data"]["levels"].as_array().unwrap().len(), 2);
        assert_eq!(t["output_dir"].as_str(), Some("runs/x"));
        assert_eq!(t["kind"].as_str(), Some("grpo"));
    }

    #[test]
    fn bad_sets_say_which() {
        let text = "kind = \"grpo\"\nseed = 3\n";
        assert_eq!(
            apply(text, &["seed".into()]).unwrap_err(),
            "--set seed: expected KEY=VALUE, e.g. grpo.iterations=4"
        );
        assert_eq!(
            apply(text, &["seed.x=1".into()]).unwrap_err(),
            "--set seed.x=1: seed is not a table"
        );
        assert_eq!(
            apply(text, &["grpo..beta=1".into()]).unwrap_err(),
            "--set grpo..beta=1: \"grpo..beta\" is not a dotted key"
        );
    }
}
