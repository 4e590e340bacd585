//! User directory search among 100,000 users (the index, in memory), each
//! with a work address (`helene.muller3@interieur.gouv.fr`):
//! - `directory/specific`: "helene mar" (two words, ~1,000 matches);
//! - `directory/broad_prefix`: "ma" (a short prefix matching ~45,000 users);
//! - `directory/no_match`;
//! - `directory/email_prefix`: "helene.mu" (the start of an address);
//! - `directory/email_specific`: "helene.muller3@interieur" (one ministry's).
//!
//! Run: `cargo bench --bench directory`. Figures in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion};

use conduit::users::directory::{DirectoryEntry, UserDirectory};

const USERS: usize = 100_000;
const FIRST: &[&str] = &[
    "Hélène",
    "François",
    "Jean",
    "Marie",
    "Léa",
    "Noémie",
    "Jérôme",
    "Chloé",
    "Amélie",
    "Stéphane",
    "Zoé",
    "Mathéo",
    "Inès",
    "Gaël",
    "Anaïs",
    "Loïc",
    "Céline",
    "Benoît",
    "Maëlle",
    "Timothée",
];
const MINISTRIES: &[&str] = &[
    "interieur",
    "culture",
    "education",
    "justice",
    "armees",
    "sante",
    "travail",
    "ecologie",
    "finances",
    "agriculture",
];
const LAST: &[&str] = &[
    "Müller",
    "Dupont",
    "Martin",
    "Lefèvre",
    "Moreau",
    "Faure",
    "Girard",
    "Bonnet",
    "Rousseau",
    "Mercier",
    "Blanc",
    "Guérin",
    "Boyer",
    "Garnier",
    "Chevalier",
    "François",
    "Legrand",
    "Gauthier",
    "Perrin",
    "Robin",
];

fn bench_directory(c: &mut Criterion) {
    let directory = UserDirectory::default();
    for i in 0..USERS {
        let (first, last, n) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()], i / 400);
        let ministry = MINISTRIES[(i / 7) % MINISTRIES.len()];
        let address = format!("{first}.{last}{n}@{ministry}.gouv.fr").to_lowercase();
        directory.upsert(DirectoryEntry {
            localpart: format!("agent{i}"),
            display_name: Some(format!("{first} {last}{n}")),
            avatar_url: None,
            emails: vec![address],
        });
    }
    assert_eq!(directory.len(), USERS);
    assert!(!directory.search("hélène mar").is_empty());
    let mut group = c.benchmark_group("directory");
    // As the endpoint asks: the first 10 (visibility is decided by the caller; all visible here).
    let search = |term: &str| directory.search_visible(term, 10, |_| Ok::<_, ()>(true)).unwrap().0.len();
    group.bench_function("specific", |b| b.iter(|| search("helene mar")));
    group.bench_function("broad_prefix", |b| b.iter(|| search("ma")));
    group.bench_function("no_match", |b| b.iter(|| search("xyzzy")));
    assert!(search("hélène.müller3@interieur") > 0);
    group.bench_function("email_prefix", |b| b.iter(|| search("helene.mu")));
    group.bench_function("email_specific", |b| b.iter(|| search("helene.muller3@interieur")));
    group.finish();
}

criterion_group!(benches, bench_directory);
criterion_main!(benches);
