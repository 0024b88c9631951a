//! The deterministic, seeded demo school.
//!
//! Same seed and size give the same school, byte for byte: all randomness
//! comes from one `StdRng`, all dates are relative to a fixed base date and
//! all collections are ordered.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::SeedSize;
use crate::school::{
    Chapter, Course, Exam, ExamRec, Holding, OfferDef, Post, Progress, PropertyDef, School, UserRec,
};

/// All seeded dates are relative to this, never to the wall clock.
pub fn base_date() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A Firebase-like 20-character id.
pub fn firebase_id(rng: &mut impl Rng) -> String {
    random_string(rng, 20)
}

pub fn random_string(rng: &mut impl Rng, len: usize) -> String {
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

fn pick<'a>(rng: &mut impl Rng, items: &[&'a str]) -> &'a str {
    if items.is_empty() {
        ""
    } else {
        items[rng.random_range(0..items.len())]
    }
}

fn chance(rng: &mut impl Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

const OFFER_NAMES: &[&str] = &[
    "Online-Kurs Basis",
    "Premium-Mitgliedschaft",
    "Masterclass Bundle",
    "Gratis Mini-Kurs",
];
const OFFER_TOPICS: &[&str] = &[
    "Fotografie",
    "Marketing",
    "Achtsamkeit",
    "Excel",
    "Yoga",
    "Englisch",
    "Vertrieb",
    "Kochen",
    "Scrum",
    "Finanzen",
];
const OFFER_FORMATS: &[&str] = &[
    "Jahresabo",
    "Einzelkurs",
    "Coaching-Paket",
    "Starter-Set",
    "VIP-Zugang",
];
const COURSE_NAMES: &[&str] = &[
    "Grundlagen der Fotografie",
    "Social-Media-Marketing kompakt",
    "Achtsamkeit im Alltag",
    "Excel für Einsteiger",
    "Yoga für den Rücken",
    "Business-Englisch",
    "Erfolgreich verkaufen",
    "Gesund kochen",
    "Projektmanagement mit Scrum",
    "Finanzen im Griff",
];
const CHAPTER_NAMES: &[&str] = &[
    "Einführung",
    "Die Grundlagen",
    "Praxis",
    "Vertiefung",
    "Fallstudien",
    "Abschluss & Ausblick",
];
const POST_NAMES: &[&str] = &[
    "Willkommen",
    "Überblick",
    "Übung",
    "Checkliste",
    "Live-Call Aufzeichnung",
    "Arbeitsblatt",
    "Quiz-Vorbereitung",
    "Bonus-Video",
];
const FIRST_NAMES: &[&str] = &[
    "Anna",
    "Lukas",
    "Mehmet",
    "Sofia",
    "Jonas",
    "Lea",
    "Ahmed",
    "Marie",
    "Paul",
    "Emma",
    "Leon",
    "Mia",
    "Fatima",
    "Noah",
    "Hannah",
    "Elias",
    "Zeynep",
    "Felix",
    "Laura",
    "Maximilian",
    "Julia",
    "Ben",
    "Sarah",
    "Tim",
    "Aylin",
    "Lars",
    "Chiara",
    "Dominik",
    "Ioana",
    "Piotr",
    "Jürgen",
    "Małgorzata",
    "Søren",
    "Chloé",
];
const LAST_NAMES: &[&str] = &[
    "Schmidt",
    "Müller",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Yılmaz",
    "Kowalski",
    "Rossi",
    "Nguyen",
    "Jansen",
    "Öztürk",
    "Wolf",
    "Neumann",
    "Braun",
    "Zimmermann",
    "König",
    "Krüger",
    "Hartmann",
    "Lange",
    "Schmitt",
    "Werner",
    "Krause",
    "Meier",
    "Lehmann",
    "Köhler",
    "García",
    "Dubois",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.com",
    "example.com",
    "example.org",
    "example.net",
];
const COMPANIES: &[&str] = &[
    "Müller GmbH",
    "Schmidt & Partner",
    "Weber Consulting",
    "Nordlicht Media",
    "Bergblick Yoga",
    "Kowalski Design",
    "Fischer Immobilien",
    "Alpen Coaching",
];

/// ASCII form of a name for the local part of an e-mail address.
fn ascii_fold(s: &str) -> String {
    let mut out = String::new();
    for c in s.to_lowercase().chars() {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            'ı' | 'í' => out.push('i'),
            'ł' => out.push('l'),
            'ø' => out.push_str("oe"),
            'é' | 'è' => out.push('e'),
            'á' | 'à' => out.push('a'),
            c if c.is_ascii_alphanumeric() => out.push(c),
            _ => {}
        }
    }
    out
}

fn order_id(rng: &mut impl Rng) -> String {
    match rng.random_range(0..3) {
        0 => format!("DS24-{:06}", rng.random_range(0..1_000_000)),
        1 => format!("CC-{}", random_string(rng, 8).to_uppercase()),
        _ => format!("TC-{:07}", rng.random_range(0..10_000_000)),
    }
}

/// A profile forces a feature onto one of the first users, so that every
/// feature exists (and is absent elsewhere) in every seeded school.
#[derive(Clone, Copy, PartialEq)]
enum Profile {
    Active,
    Revoked,
    SharedOrder,
    Expired,
    ExpiresLater,
    Nothing,
    PlusAddress,
    Random,
}

const PROFILES: &[Profile] = &[
    Profile::Active,
    Profile::Revoked,
    Profile::SharedOrder,
    Profile::Expired,
    Profile::ExpiresLater,
    Profile::Nothing,
    Profile::PlusAddress,
];

/// Generates the school for `seed` and `size`.
pub fn seed_school(seed: u64, size: &SeedSize) -> School {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = base_date();

    let courses: Vec<Course> = (0..size.courses).map(|i| gen_course(&mut rng, i)).collect();
    let offers: Vec<OfferDef> = (0..size.offers)
        .map(|i| gen_offer(&mut rng, i, &courses, base))
        .collect();
    let properties = vec![
        PropertyDef {
            id: firebase_id(&mut rng),
            name: "Firma".into(),
            kind: "text".into(),
        },
        PropertyDef {
            id: firebase_id(&mut rng),
            name: "Telefon".into(),
            kind: "phone".into(),
        },
        PropertyDef {
            id: firebase_id(&mut rng),
            name: "Newsletter".into(),
            kind: "checkbox".into(),
        },
    ];
    let mut exams: Vec<Exam> = courses
        .iter()
        .map(|c| Exam {
            id: firebase_id(&mut rng),
            course_id: c.id.clone(),
            name: format!("Abschlusstest: {}", c.name),
            max_score: 20.0,
            results: Vec::new(),
        })
        .collect();

    let mut school = School {
        offers,
        courses,
        properties,
        ..School::default()
    };
    let mut emails = BTreeSet::new();
    for i in 0..size.users {
        let profile = PROFILES.get(i).copied().unwrap_or(Profile::Random);
        let user = gen_user(&mut rng, &school, profile, &mut emails, base);
        school.insert_user(user);
    }

    // Exam results, in uid order so they do not depend on generation order.
    for exam in &mut exams {
        for user in school.users.values() {
            if user.progress.contains_key(&exam.course_id) && chance(&mut rng, 0.5) {
                let score = f64::from(rng.random_range(0..=20u32));
                exam.results.push(ExamRec {
                    uid: user.uid.clone(),
                    email: user.email.clone(),
                    score,
                    passed: score >= 12.0,
                    submitted_at: user.created_at
                        + Duration::seconds(rng.random_range(3_600..20_000_000)),
                });
            }
        }
    }
    school.exams = exams;
    school
}

fn gen_course(rng: &mut StdRng, i: usize) -> Course {
    let name = match COURSE_NAMES.get(i) {
        Some(n) => (*n).to_string(),
        None => format!("Kurs {}", i + 1),
    };
    let id = firebase_id(rng);
    let chapters = (0..rng.random_range(3..=5))
        .map(|c| Chapter {
            id: firebase_id(rng),
            name: format!(
                "Kapitel {}: {}",
                c + 1,
                CHAPTER_NAMES.get(c).unwrap_or(&"Extra")
            ),
            posts: (0..rng.random_range(3..=6))
                .map(|p| Post {
                    id: firebase_id(rng),
                    name: format!("Lektion {}.{}: {}", c + 1, p + 1, pick(rng, POST_NAMES)),
                })
                .collect(),
        })
        .collect();
    Course { id, name, chapters }
}

fn gen_offer(rng: &mut StdRng, i: usize, courses: &[Course], base: DateTime<Utc>) -> OfferDef {
    let name = match OFFER_NAMES.get(i) {
        Some(n) => (*n).to_string(),
        None => {
            let k = i - OFFER_NAMES.len();
            let combos = OFFER_TOPICS.len() * OFFER_FORMATS.len();
            let topic = OFFER_TOPICS[k % OFFER_TOPICS.len()];
            let format = OFFER_FORMATS[(k / OFFER_TOPICS.len()) % OFFER_FORMATS.len()];
            if k < combos {
                format!("{topic} {format}")
            } else {
                format!("{topic} {format} {}", k / combos + 1)
            }
        }
    };
    let mut picked = BTreeSet::new();
    if !courses.is_empty() {
        // Offer i always grants course i (mod n), so every course is sold somewhere.
        picked.insert(i % courses.len());
        let want = rng.random_range(1..=3usize).min(courses.len());
        while picked.len() < want {
            picked.insert(rng.random_range(0..courses.len()));
        }
    }
    OfferDef {
        id: firebase_id(rng),
        name,
        course_ids: picked.into_iter().map(|c| courses[c].id.clone()).collect(),
        priority: (i * 10) as f64,
        updated_at: base - Duration::seconds(rng.random_range(0..30_000_000)),
    }
}

fn gen_user(
    rng: &mut StdRng,
    school: &School,
    profile: Profile,
    emails: &mut BTreeSet<String>,
    base: DateTime<Utc>,
) -> UserRec {
    let uid = firebase_id(rng);
    let first = pick(rng, FIRST_NAMES);
    let last = pick(rng, LAST_NAMES);
    let domain = pick(rng, DOMAINS);
    let number = rng.random_range(1..100u32);
    let tag = if profile == Profile::PlusAddress {
        "+kurs"
    } else {
        ""
    };
    let mut local = format!("{}.{}{number}{tag}", ascii_fold(first), ascii_fold(last));
    let mut n = 2;
    while emails.contains(&format!("{local}@{domain}")) {
        local = format!(
            "{}.{}{number}x{n}{tag}",
            ascii_fold(first),
            ascii_fold(last)
        );
        n += 1;
    }
    let email = format!("{local}@{domain}");
    emails.insert(email.clone());
    let created_at = base - Duration::seconds(rng.random_range(86_400..63_000_000));

    let offers = &school.offers;
    let mut holdings = Vec::new();
    if !offers.is_empty() {
        let first_offer = rng.random_range(0..offers.len());
        let mut h = Holding::new(&offers[first_offer].id);
        match profile {
            Profile::Nothing => {}
            Profile::Active | Profile::PlusAddress => holdings.push(h),
            Profile::Revoked => {
                h.active = false;
                holdings.push(h);
            }
            Profile::Expired => {
                h.expires_at = Some(base - Duration::days(30));
                holdings.push(h);
            }
            Profile::ExpiresLater => {
                h.expires_at = Some(base + Duration::days(5 * 365));
                holdings.push(h);
            }
            Profile::SharedOrder => {
                let order = order_id(rng);
                h.order_id = Some(order.clone());
                holdings.push(h);
                if offers.len() > 1 {
                    let second = (first_offer + 1) % offers.len();
                    let mut h2 = Holding::new(&offers[second].id);
                    h2.order_id = Some(order);
                    holdings.push(h2);
                }
            }
            Profile::Random => {
                let count = match rng.random_range(0..10) {
                    0 => 0,
                    1..=6 => 1,
                    _ => 2,
                };
                let mut idx = first_offer;
                for _ in 0..count.min(offers.len()) {
                    let mut h = Holding::new(&offers[idx].id);
                    h.active = chance(rng, 0.85);
                    if chance(rng, 0.4) {
                        h.order_id = Some(order_id(rng));
                    }
                    if chance(rng, 0.2) {
                        let days = rng.random_range(1..400);
                        h.expires_at = Some(if chance(rng, 0.5) {
                            base - Duration::days(days)
                        } else {
                            base + Duration::days(5 * 365 + days)
                        });
                    }
                    holdings.push(h);
                    idx = (idx + 1) % offers.len();
                }
            }
        }
    }

    // Progress in granted courses; forced for the first profiles so revoke tests find some.
    let mut progress = BTreeMap::new();
    let force = matches!(
        profile,
        Profile::Active | Profile::Revoked | Profile::SharedOrder
    );
    for h in &holdings {
        for cid in school
            .offer(&h.offer_id)
            .map(|o| o.course_ids.clone())
            .unwrap_or_default()
        {
            if progress.contains_key(&cid) || !(force || chance(rng, 0.7)) {
                continue;
            }
            let Some(course) = school.course(&cid) else {
                continue;
            };
            let posts: Vec<&str> = course
                .chapters
                .iter()
                .flat_map(|c| &c.posts)
                .map(|p| p.id.as_str())
                .collect();
            let done = rng
                .random_range(0..posts.len().max(1))
                .max(usize::from(force));
            let open = rng.random_range(1..=2usize);
            progress.insert(
                cid,
                Progress {
                    completed_posts: posts.iter().take(done).map(|p| (*p).to_string()).collect(),
                    active_posts: posts
                        .iter()
                        .skip(done)
                        .take(open)
                        .map(|p| (*p).to_string())
                        .collect(),
                },
            );
        }
    }

    let mut custom_properties = BTreeMap::new();
    let props = &school.properties;
    let want_props =
        profile == Profile::PlusAddress || (profile == Profile::Random && chance(rng, 0.6));
    if want_props && props.len() >= 3 {
        if profile == Profile::PlusAddress || chance(rng, 0.6) {
            custom_properties.insert(props[0].id.clone(), pick(rng, COMPANIES).to_string());
        }
        if profile == Profile::PlusAddress || chance(rng, 0.5) {
            let phone = format!(
                "+49 1{}{} {:07}",
                rng.random_range(5..8),
                rng.random_range(0..10),
                rng.random_range(0..10_000_000)
            );
            custom_properties.insert(props[1].id.clone(), phone);
        }
        let newsletter = if chance(rng, 0.5) { "true" } else { "false" };
        custom_properties.insert(props[2].id.clone(), newsletter.to_string());
    }

    UserRec {
        uid,
        email,
        firstname: Some(first.to_string()),
        name: Some(last.to_string()),
        created_at,
        holdings,
        custom_properties,
        progress,
        unlocked_chapters: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_school() {
        let size = SeedSize::default();
        assert_eq!(seed_school(7, &size), seed_school(7, &size));
        assert_ne!(seed_school(7, &size), seed_school(8, &size));
    }

    #[test]
    fn every_feature_is_present_and_absent() {
        let s = seed_school(42, &SeedSize::default());
        let now = base_date();
        let users: Vec<&UserRec> = s.users.values().collect();
        let some = |f: &dyn Fn(&UserRec) -> bool| {
            users.iter().any(|u| f(u)) && users.iter().any(|u| !f(u))
        };
        assert!(some(&|u| u.holdings.iter().any(|h| !h.active)));
        assert!(some(&|u| u.holdings.iter().any(|h| h.order_id.is_some())));
        assert!(some(&|u| u
            .holdings
            .iter()
            .any(|h| h.expires_at.is_some_and(|e| e <= now))));
        assert!(some(&|u| u
            .holdings
            .iter()
            .any(|h| h.expires_at.is_some_and(|e| e > now))));
        assert!(some(&|u| u.holdings.is_empty()));
        assert!(some(&|u| !u.progress.is_empty()));
        assert!(some(&|u| !u.custom_properties.is_empty()));
        assert!(some(&|u| u.email.contains('+')));
        assert!(
            users
                .iter()
                .all(|u| u.uid.len() == 20 && u.email == u.email.to_lowercase())
        );
        assert!(s.exams.iter().any(|e| !e.results.is_empty()));
        assert_eq!(s.offers[0].name, "Online-Kurs Basis");
    }

    #[test]
    fn tiny_and_empty_schools_do_not_panic() {
        for (users, offers, courses) in [(0, 0, 0), (3, 0, 0), (10, 1, 0), (10, 1, 1), (60, 70, 12)]
        {
            let s = seed_school(
                1,
                &SeedSize {
                    users,
                    offers,
                    courses,
                },
            );
            assert_eq!(s.users.len(), users);
        }
    }
}
