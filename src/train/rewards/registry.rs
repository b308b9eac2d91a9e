//! The rewards a recipe can name, and the recipe's `[rewards]` section read through that list.
//!
//! The list is [`each_kind`]: one line per reward, in scoring order (the order of a step's
//! metrics and of `thinkbench reward`'s table, whatever order the recipe wrote its tables in).
//! The section is read inside serde, so an error in a reward's table names its key exactly as
//! the rest of the recipe's errors do (`rewards.accuracy.compare: unknown value …`), and an
//! unknown `[rewards.NAME]` lists the names here.

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock};

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{AccuracyReward, FormatReward, OverlongReward, Reward, RewardKind};

/// Something done once per registered reward type.
trait KindVisitor {
    type Error;
    fn visit<R: RewardKind>(&mut self) -> Result<(), Self::Error>;
}

/// Every reward, in scoring order. A new reward is its file in this folder and one line here.
fn each_kind<V: KindVisitor>(v: &mut V) -> Result<(), V::Error> {
    v.visit::<AccuracyReward>()?;
    v.visit::<FormatReward>()?;
    v.visit::<OverlongReward>()?;
    Ok(())
}

/// The registered names, in scoring order (a `'static` list: serde's unknown-key error wants one).
static NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    struct Names(Vec<&'static str>);
    impl KindVisitor for Names {
        type Error = Infallible;
        fn visit<R: RewardKind>(&mut self) -> Result<(), Infallible> {
            self.0.push(R::NAME);
            Ok(())
        }
    }
    let mut names = Names(Vec::new());
    let Ok(()) = each_kind(&mut names);
    names.0
});

/// The reward functions and their weights; the reward of a completion is the weighted sum.
/// Holds the rewards the recipe names, in scoring order.
#[derive(Debug, Clone, Default)]
pub struct RewardsSection {
    rewards: Vec<Arc<dyn Reward>>,
}

impl RewardsSection {
    /// Every reward a recipe can name, in scoring order.
    pub fn known_names() -> &'static [&'static str] {
        &NAMES
    }

    /// The recipe's rewards, in scoring order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Reward> {
        self.rewards.iter().map(|r| r.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    /// The parameters of reward `R`, when the recipe names it.
    pub fn get<R: RewardKind>(&self) -> Option<&R> {
        self.iter()
            .find_map(|r| (r as &dyn Any).downcast_ref::<R>())
    }

    /// Keeps only the rewards `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&dyn Reward) -> bool) {
        self.rewards.retain(|r| keep(r.as_ref()));
    }
}

impl PartialEq for RewardsSection {
    fn eq(&self, other: &Self) -> bool {
        let key = |s: &Self| -> Vec<_> { s.iter().map(|r| (r.name(), r.params())).collect() };
        key(self) == key(other)
    }
}

/// Every registered name, `null` for the ones the recipe leaves out: the `recipe.json` a run
/// folder already holds is written this way.
impl Serialize for RewardsSection {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(NAMES.len()))?;
        for name in NAMES.iter() {
            let params = self.iter().find(|r| r.name() == *name).map(|r| r.params());
            map.serialize_entry(name, &params)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for RewardsSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SectionVisitor)
    }
}

struct SectionVisitor;

impl<'de> Visitor<'de> for SectionVisitor {
    type Value = RewardsSection;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // The wording serde's derive used ("struct …"), which recipe errors read as "a table".
        f.write_str("struct RewardsSection")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RewardsSection, A::Error> {
        let mut found: Vec<(usize, Arc<dyn Reward>)> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let Some(index) = NAMES.iter().position(|n| *n == name) else {
                return Err(de::Error::unknown_field(&name, &NAMES));
            };
            let mut parse = ParseOne {
                name: &name,
                map: &mut map,
                parsed: None,
                de: PhantomData,
            };
            each_kind(&mut parse)?;
            let reward = parse.parsed.expect("a registered name parses as its kind");
            found.push((index, reward));
        }
        found.sort_by_key(|(index, _)| *index);
        Ok(RewardsSection {
            rewards: found.into_iter().map(|(_, r)| r).collect(),
        })
    }
}

/// Reads the value of `[rewards.NAME]` as the kind registered under `name`.
struct ParseOne<'a, 'de, A: MapAccess<'de>> {
    name: &'a str,
    map: &'a mut A,
    parsed: Option<Arc<dyn Reward>>,
    de: PhantomData<&'de ()>,
}

impl<'de, A: MapAccess<'de>> KindVisitor for ParseOne<'_, 'de, A> {
    type Error = A::Error;

    fn visit<R: RewardKind>(&mut self) -> Result<(), A::Error> {
        if self.parsed.is_none() && R::NAME == self.name {
            self.parsed = Some(Arc::new(self.map.next_value::<R>()?));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::train::recipe::{parse_grpo as grpo, TEST_GRPO_RECIPE};
    use crate::train::rewards::Rewards;

    #[test]
    fn errors_inside_a_reward_table_name_their_key() {
        let e = |from: &str, to: &str| {
            let text = TEST_GRPO_RECIPE.replace(from, to);
            assert_ne!(text, TEST_GRPO_RECIPE, "{from}");
            grpo(&text).unwrap_err()
        };
        let compare = e(
            "[rewards.accuracy]\n",
            "[rewards.accuracy]\ncompare = \"fuzzy\"\n",
        );
        assert!(
            compare.starts_with(
                "recipes/g.toml: key rewards.accuracy.compare: unknown value \"fuzzy\""
            ),
            "{compare}"
        );
        assert_eq!(
            e("[rewards.format]\nweight = 0.5\n", "[rewards.format]\n"),
            "recipes/g.toml: key rewards.format.weight: missing"
        );
        assert_eq!(
            e(
                "[rewards.format]\nweight = 0.5\n",
                "[rewards.format]\nweight = \"x\"\n"
            ),
            "recipes/g.toml: key rewards.format.weight: expected a number, found \"x\""
        );
        let typo = e("buffer = 8", "buffer = 8\nbufer = 8");
        assert!(
            typo.starts_with("recipes/g.toml: key rewards.overlong.bufer: unknown key"),
            "{typo}"
        );
    }

    #[test]
    fn rewards_score_in_registry_order_and_serialize_as_before() {
        // The tables in another order: scoring order is the registry's.
        let text = TEST_GRPO_RECIPE
            .replace("[rewards.accuracy]\nweight = 1.0\n", "")
            .replace(
                "[rewards.overlong]\nweight = 1.0\nbuffer = 8\n",
                "[rewards.overlong]\nweight = 1.0\nbuffer = 8\n[rewards.accuracy]\nweight = 1.0\n",
            );
        let r = grpo(&text).unwrap();
        assert_eq!(
            Rewards::from_recipe(&r, "").names(),
            vec!["accuracy", "format", "overlong"]
        );
        assert_eq!(r, grpo(TEST_GRPO_RECIPE).unwrap());
        // recipe.json keeps every registered name, null where the recipe has none.
        let no_format = TEST_GRPO_RECIPE.replace("[rewards.format]\nweight = 0.5\n", "");
        let v = serde_json::to_value(grpo(&no_format).unwrap().rewards).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "accuracy": {"weight": 1.0, "compare": "numeric", "correct": 1.0, "wrong": 0.0},
                "format": null,
                "overlong": {"weight": 1.0, "buffer": 8, "max_length": null},
            })
        );
    }
}
