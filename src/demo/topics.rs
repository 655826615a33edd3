//! The prompts of the controlled experiment: "Write one sentence about {topic}." over a built-in
//! list of everyday topics, split into training and held-out prompts by a seeded shuffle.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Everyday single-word topics: concrete enough that a one-sentence answer names them, varied
/// enough that an answer written for one is off-topic for another.
pub const TOPICS: &[&str] = &[
    "ocean",
    "coffee",
    "winter",
    "dogs",
    "music",
    "rain",
    "books",
    "cities",
    "forests",
    "bread",
    "trains",
    "gardens",
    "mountains",
    "rivers",
    "cats",
    "bicycles",
    "libraries",
    "snow",
    "tea",
    "markets",
    "bridges",
    "birds",
    "islands",
    "deserts",
    "storms",
    "clocks",
    "candles",
    "kitchens",
    "schools",
    "hospitals",
    "airports",
    "museums",
    "football",
    "chess",
    "painting",
    "dancing",
    "cooking",
    "fishing",
    "camping",
    "hiking",
    "sunsets",
    "stars",
    "planets",
    "volcanoes",
    "earthquakes",
    "lakes",
    "beaches",
    "farms",
    "horses",
    "bees",
    "flowers",
    "trees",
    "apples",
    "chocolate",
    "cheese",
    "soup",
    "pizza",
    "rice",
    "honey",
    "lemons",
    "oranges",
    "strawberries",
    "tomatoes",
    "potatoes",
    "computers",
    "phones",
    "robots",
    "cars",
    "boats",
    "airplanes",
    "rockets",
    "newspapers",
    "letters",
    "photographs",
    "movies",
    "theaters",
    "concerts",
    "guitars",
    "pianos",
    "drums",
    "violins",
    "poetry",
    "history",
    "mathematics",
    "science",
    "medicine",
    "doctors",
    "teachers",
    "farmers",
    "soldiers",
    "sailors",
    "pilots",
    "children",
    "grandparents",
    "friendship",
    "holidays",
    "birthdays",
    "weddings",
    "mornings",
    "evenings",
    "autumn",
    "spring",
    "summer",
    "wind",
    "fog",
    "thunder",
    "lightning",
    "clouds",
    "rainbows",
    "the moon",
    "the sun",
    "wolves",
    "bears",
    "whales",
    "dolphins",
    "sharks",
    "owls",
    "eagles",
    "butterflies",
    "spiders",
    "ants",
    "frogs",
    "turtles",
    "elephants",
    "lions",
    "tigers",
    "monkeys",
    "penguins",
    "rabbits",
    "mice",
    "castles",
    "villages",
    "streets",
    "parks",
    "playgrounds",
    "zoos",
    "hotels",
    "restaurants",
    "bakeries",
    "shops",
    "factories",
    "offices",
    "prisons",
    "churches",
    "temples",
    "gyms",
    "swimming",
    "running",
    "sleeping",
    "dreams",
    "memories",
    "money",
    "taxes",
    "elections",
    "laws",
    "wars",
    "peace",
    "science fiction",
    "maps",
    "languages",
    "alphabets",
    "keyboards",
    "pencils",
    "paper",
    "glass",
    "iron",
    "gold",
    "silver",
    "diamonds",
    "salt",
    "sugar",
    "water",
    "fire",
    "ice",
    "sand",
    "stone",
    "wood",
    "plastic",
    "electricity",
    "engines",
    "batteries",
    "lamps",
    "mirrors",
    "doors",
    "windows",
    "chairs",
    "tables",
    "beds",
    "pillows",
    "blankets",
    "shoes",
    "hats",
    "umbrellas",
    "gloves",
    "scarves",
    "jackets",
    "buttons",
    "rings",
    "watches",
    "games",
    "puzzles",
    "toys",
    "balloons",
    "kites",
    "fireworks",
    "festivals",
    "parades",
    "circuses",
    "magic",
    "jokes",
    "stories",
    "songs",
    "radio",
    "television",
    "internet",
    "email",
    "video games",
];

/// The prompt for a topic.
pub fn prompt(topic: &str) -> String {
    format!("Write one sentence about {topic}.")
}

/// The topic of a prompt made by [`prompt`] ("Write one sentence about {topic}." → topic), if it is one.
pub fn topic_of(prompt: &str) -> Option<String> {
    let t = prompt.trim().strip_prefix("Write one sentence about ")?.strip_suffix('.')?.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `(train, held_out)` topics: a seeded shuffle of [`TOPICS`], the first `n_train` for training and
/// the next `n_held_out` held out. Errors when the list is too short.
pub fn split(n_train: usize, n_held_out: usize, seed: u64) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    anyhow::ensure!(
        n_train + n_held_out <= TOPICS.len(),
        "{} training + {} held-out prompts asked for, but the built-in list has {} topics",
        n_train,
        n_held_out,
        TOPICS.len()
    );
    let mut all: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let held = all.split_off(n_train);
    Ok((all, held.into_iter().take(n_held_out).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_distinct_and_the_split_is_disjoint_and_seeded() {
        let set: std::collections::BTreeSet<_> = TOPICS.iter().collect();
        assert_eq!(set.len(), TOPICS.len(), "duplicate topic");
        let (a, b) = split(100, 50, 3).unwrap();
        assert_eq!((a.len(), b.len()), (100, 50));
        assert!(a.iter().all(|t| !b.contains(t)));
        assert_eq!(split(100, 50, 3).unwrap(), (a, b));
        assert!(split(TOPICS.len(), 1, 0).is_err());
    }

    #[test]
    fn topic_of_inverts_prompt() {
        for t in ["the moon", "science fiction", "cats"] {
            assert_eq!(topic_of(&prompt(t)).as_deref(), Some(t));
        }
        assert_eq!(topic_of("Write a poem about cats."), None);
        assert_eq!(topic_of("Write one sentence about ."), None);
    }
}
