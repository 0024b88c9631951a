//! In-memory model of one school and the semantics of every operation.
//!
//! Pure: no I/O, no clock (callers pass `now`), no randomness (callers pass
//! an id generator), so every rule can be unit-tested directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use memberspot_wire::{
    CourseProgress, CustomUserProperty, ExamResult, Extra, Offer, OfferHolding, PostRef, Posts,
    Timestamp, User, UserRef,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The whole tenant: catalogue plus members.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct School {
    pub offers: Vec<OfferDef>,
    pub courses: Vec<Course>,
    pub exams: Vec<Exam>,
    pub properties: Vec<PropertyDef>,
    /// Keyed by uid; the BTreeMap gives the list order for free.
    pub users: BTreeMap<String, UserRec>,
    /// Lower-cased e-mail -> uid; rebuilt after loading.
    #[serde(skip)]
    pub(crate) email_index: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferDef {
    pub id: String,
    pub name: String,
    pub course_ids: Vec<String>,
    pub priority: f64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Course {
    pub id: String,
    pub name: String,
    pub chapters: Vec<Chapter>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chapter {
    pub id: String,
    pub name: String,
    pub posts: Vec<Post>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Post {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exam {
    pub id: String,
    pub course_id: String,
    pub name: String,
    pub max_score: f64,
    pub results: Vec<ExamRec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExamRec {
    pub uid: String,
    pub email: String,
    pub score: f64,
    pub passed: bool,
    pub submitted_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyDef {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRec {
    pub uid: String,
    pub email: String,
    pub firstname: Option<String>,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub holdings: Vec<Holding>,
    #[serde(default)]
    pub custom_properties: BTreeMap<String, String>,
    /// Keyed by course id.
    #[serde(default)]
    pub progress: BTreeMap<String, Progress>,
    #[serde(default)]
    pub unlocked_chapters: Vec<UnlockedChapter>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holding {
    pub offer_id: String,
    /// The stored flag; see [`Holding::is_active`] for the effective state.
    pub active: bool,
    pub order_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Holding {
    pub fn new(offer_id: &str) -> Self {
        Holding {
            offer_id: offer_id.to_string(),
            active: true,
            order_id: None,
            expires_at: None,
        }
    }

    /// A holding whose expiry has been reached grants nothing, whatever its flag says.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.active && self.expires_at.is_none_or(|e| e > now)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub active_posts: Vec<String>,
    pub completed_posts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnlockedChapter {
    pub course_id: String,
    pub chapter_id: String,
    pub enabled_at: DateTime<Utc>,
}

/// Domain failures; every one is a 404 on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchoolError {
    UserNotFound,
    OfferNotFound,
    HoldingNotFound,
    OrderNotFound,
    CourseNotFound,
    ChapterNotFound,
    PostNotFound,
    NotEnrolled,
    ExamNotFound,
    PropertyNotFound(String),
}

impl fmt::Display for SchoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchoolError::UserNotFound => f.write_str("User not found"),
            SchoolError::OfferNotFound => f.write_str("Offer not found"),
            SchoolError::HoldingNotFound => f.write_str("User does not hold this offer"),
            SchoolError::OrderNotFound => f.write_str("User has no offer with this orderId"),
            SchoolError::CourseNotFound => f.write_str("Course not found"),
            SchoolError::ChapterNotFound => f.write_str("Chapter not found"),
            SchoolError::PostNotFound => f.write_str("Post not found"),
            SchoolError::NotEnrolled => f.write_str("User has no access to this course"),
            SchoolError::ExamNotFound => f.write_str("Exam not found"),
            SchoolError::PropertyNotFound(id) => write!(f, "Custom user property {id} not found"),
        }
    }
}

impl std::error::Error for SchoolError {}

/// Filters of `GET /users/list`; `None` = not filtered.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    pub offer_id: Option<String>,
    pub course_id: Option<String>,
    pub active: Option<bool>,
}

/// Input of a grant.
#[derive(Clone, Debug, Default)]
pub struct Grant {
    pub email: String,
    pub offer_id: String,
    pub firstname: Option<String>,
    pub name: Option<String>,
    pub order_id: Option<String>,
}

/// Trimmed and lower-cased, the form e-mails are stored and matched in.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Takes up to `len` items and reports the key of the last one when more remain,
/// so a client never has to fetch an empty final page.
pub fn paginate<T>(
    mut items: impl Iterator<Item = T>,
    len: usize,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let page: Vec<T> = items.by_ref().take(len).collect();
    let more = items.next().is_some();
    let next = if more { page.last().map(&key) } else { None };
    (page, next)
}

impl School {
    /// Builds the derived indices; fails on duplicate e-mails or uid mismatches.
    pub fn rebuild_index(&mut self) -> Result<(), String> {
        self.email_index.clear();
        for (uid, user) in &self.users {
            if uid != &user.uid {
                return Err(format!("user stored under key {uid} has uid {}", user.uid));
            }
            let email = normalize_email(&user.email);
            if self
                .email_index
                .insert(email.clone(), uid.clone())
                .is_some()
            {
                return Err(format!("e-mail {email} is used by more than one user"));
            }
        }
        Ok(())
    }

    pub fn offer(&self, id: &str) -> Option<&OfferDef> {
        self.offers.iter().find(|o| o.id == id)
    }

    pub fn course(&self, id: &str) -> Option<&Course> {
        self.courses.iter().find(|c| c.id == id)
    }

    fn offer_courses(&self, offer_id: &str) -> &[String] {
        self.offer(offer_id)
            .map(|o| o.course_ids.as_slice())
            .unwrap_or(&[])
    }

    pub fn uid_by_email(&self, email: &str) -> Option<&str> {
        self.email_index
            .get(&normalize_email(email))
            .map(String::as_str)
    }

    pub fn user_by_email(&self, email: &str) -> Option<&UserRec> {
        self.uid_by_email(email).and_then(|uid| self.users.get(uid))
    }

    pub fn user_by_uid(&self, uid: &str) -> Option<&UserRec> {
        self.users.get(uid)
    }

    fn user_mut(&mut self, email: &str) -> Result<&mut UserRec, SchoolError> {
        let uid = self
            .uid_by_email(email)
            .ok_or(SchoolError::UserNotFound)?
            .to_string();
        self.users.get_mut(&uid).ok_or(SchoolError::UserNotFound)
    }

    /// Inserts a user, keeping the index in step. Replaces nothing: the caller
    /// guarantees uid and e-mail are new.
    pub fn insert_user(&mut self, mut user: UserRec) {
        user.email = normalize_email(&user.email);
        self.email_index
            .insert(user.email.clone(), user.uid.clone());
        self.users.insert(user.uid.clone(), user);
    }

    /// The canonical wire form, with the effective `active` of each holding.
    pub fn user_to_wire(&self, user: &UserRec, now: DateTime<Utc>) -> User {
        User {
            uid: user.uid.clone(),
            email: user.email.clone(),
            firstname: user.firstname.clone(),
            name: user.name.clone(),
            created_at: Some(Timestamp(user.created_at)),
            active: None,
            offers: user
                .holdings
                .iter()
                .map(|h| OfferHolding {
                    offer_id: h.offer_id.clone(),
                    active: h.is_active(now),
                    order_id: h.order_id.clone(),
                    expires_at: h.expires_at.map(Timestamp),
                    extra: Extra::new(),
                })
                .collect(),
            custom_properties: user
                .custom_properties
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
            progress: None,
            extra: Extra::new(),
        }
    }

    pub fn offer_to_wire(offer: &OfferDef) -> Offer {
        Offer {
            id: offer.id.clone(),
            name: offer.name.clone(),
            course_ids: offer.course_ids.clone(),
            priority: Some(offer.priority),
            updated_at: Some(Timestamp(offer.updated_at)),
            extra: Extra::new(),
        }
    }

    pub fn property_to_wire(p: &PropertyDef) -> CustomUserProperty {
        CustomUserProperty {
            id: p.id.clone(),
            name: p.name.clone(),
            kind: Some(p.kind.clone()),
            school_id: None,
            extra: Extra::new(),
        }
    }

    fn matches(&self, user: &UserRec, filter: &UserFilter, now: DateTime<Utc>) -> bool {
        let filtered = filter.offer_id.is_some() || filter.course_id.is_some();
        let mut relevant = user.holdings.iter().filter(|h| {
            filter.offer_id.as_ref().is_none_or(|o| &h.offer_id == o)
                && filter
                    .course_id
                    .as_ref()
                    .is_none_or(|c| self.offer_courses(&h.offer_id).contains(c))
        });
        match filter.active {
            None => !filtered || relevant.next().is_some(),
            Some(true) => relevant.any(|h| h.is_active(now)),
            Some(false) => {
                let relevant: Vec<&Holding> = relevant.collect();
                // With an offer/course filter the user must hold it (inactive);
                // without one, "inactive" includes users holding nothing at all.
                (!filtered || !relevant.is_empty()) && !relevant.iter().any(|h| h.is_active(now))
            }
        }
    }

    /// One page of users ordered by uid, strictly after `last_loaded_id`.
    pub fn list_users(
        &self,
        last_loaded_id: Option<&str>,
        page_length: usize,
        filter: &UserFilter,
        now: DateTime<Utc>,
    ) -> (Vec<&UserRec>, Option<String>) {
        use std::ops::Bound;
        let start = match last_loaded_id {
            // Bound on the key itself, so the cursor stays valid after that user is deleted.
            Some(id) => Bound::Excluded(id.to_string()),
            None => Bound::Unbounded,
        };
        let iter = self
            .users
            .range((start, Bound::Unbounded))
            .map(|(_, u)| u)
            .filter(|u| self.matches(u, filter, now));
        paginate(iter, page_length, |u| u.uid.clone())
    }

    /// Grants an offer, creating the user when the e-mail is unknown.
    /// Returns the uid.
    pub fn grant(
        &mut self,
        grant: Grant,
        now: DateTime<Utc>,
        mut new_uid: impl FnMut() -> String,
    ) -> Result<String, SchoolError> {
        if self.offer(&grant.offer_id).is_none() {
            return Err(SchoolError::OfferNotFound);
        }
        let email = normalize_email(&grant.email);
        if self.uid_by_email(&email).is_none() {
            let mut uid = new_uid();
            // Ids are random; a collision is astronomically unlikely but cheap to rule out.
            while self.users.contains_key(&uid) {
                uid = new_uid();
            }
            self.insert_user(UserRec {
                uid,
                email: email.clone(),
                firstname: None,
                name: None,
                created_at: now,
                holdings: Vec::new(),
                custom_properties: BTreeMap::new(),
                progress: BTreeMap::new(),
                unlocked_chapters: Vec::new(),
            });
        }
        let user = self.user_mut(&email)?;
        // Names only fill gaps: a grant must not rename an existing member.
        if user.firstname.is_none() {
            user.firstname = grant.firstname;
        }
        if user.name.is_none() {
            user.name = grant.name;
        }
        match user
            .holdings
            .iter_mut()
            .find(|h| h.offer_id == grant.offer_id)
        {
            Some(h) => {
                h.active = true;
                if grant.order_id.is_some() {
                    h.order_id = grant.order_id;
                }
                // A re-grant of an expired holding must actually give access again.
                if h.expires_at.is_some_and(|e| e <= now) {
                    h.expires_at = None;
                }
            }
            None => {
                let mut h = Holding::new(&grant.offer_id);
                h.order_id = grant.order_id;
                user.holdings.push(h);
            }
        }
        Ok(user.uid.clone())
    }

    /// `Some(b)` sets the flag (progress kept); `None` removes the holding and
    /// the progress no remaining holding covers.
    pub fn set_offer_state(
        &mut self,
        email: &str,
        offer_id: &str,
        active: Option<bool>,
    ) -> Result<String, SchoolError> {
        let user = self.user_mut(email)?;
        if !user.holdings.iter().any(|h| h.offer_id == offer_id) {
            return Err(SchoolError::HoldingNotFound);
        }
        let uid = user.uid.clone();
        self.apply_state(&uid, |h| h.offer_id == offer_id, active);
        Ok(uid)
    }

    /// Like [`School::set_offer_state`] for every holding granted under `order_id`.
    pub fn set_order_state(
        &mut self,
        email: &str,
        order_id: &str,
        active: Option<bool>,
    ) -> Result<String, SchoolError> {
        let user = self.user_mut(email)?;
        let of_order = |h: &Holding| h.order_id.as_deref() == Some(order_id);
        if !user.holdings.iter().any(of_order) {
            return Err(SchoolError::OrderNotFound);
        }
        let uid = user.uid.clone();
        self.apply_state(&uid, of_order, active);
        Ok(uid)
    }

    fn apply_state(&mut self, uid: &str, pick: impl Fn(&Holding) -> bool, active: Option<bool>) {
        let Some(user) = self.users.get(uid) else {
            return;
        };
        let removed_offers: Vec<String> = match active {
            Some(_) => Vec::new(),
            None => user
                .holdings
                .iter()
                .filter(|h| pick(h))
                .map(|h| h.offer_id.clone())
                .collect(),
        };
        let removed_courses: BTreeSet<String> = removed_offers
            .iter()
            .flat_map(|o| self.offer_courses(o).iter().cloned())
            .collect();
        let kept_courses: BTreeSet<String> = user
            .holdings
            .iter()
            .filter(|h| active.is_some() || !pick(h))
            .flat_map(|h| self.offer_courses(&h.offer_id).iter().cloned())
            .collect();
        let Some(user) = self.users.get_mut(uid) else {
            return;
        };
        match active {
            Some(flag) => user
                .holdings
                .iter_mut()
                .filter(|h| pick(h))
                .for_each(|h| h.active = flag),
            None => {
                user.holdings.retain(|h| !pick(h));
                for course in removed_courses.difference(&kept_courses) {
                    user.progress.remove(course);
                }
            }
        }
    }

    pub fn set_offer_expires(
        &mut self,
        email: &str,
        offer_id: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<String, SchoolError> {
        let user = self.user_mut(email)?;
        let h = user
            .holdings
            .iter_mut()
            .find(|h| h.offer_id == offer_id)
            .ok_or(SchoolError::HoldingNotFound)?;
        h.expires_at = expires_at;
        Ok(user.uid.clone())
    }

    /// Deletes the listed users; unknown or malformed e-mails are ignored.
    /// Returns the lower-cased e-mails actually deleted, in request order.
    pub fn delete_users<'a>(&mut self, emails: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut deleted = Vec::new();
        for email in emails {
            let email = normalize_email(email);
            let Some(uid) = self.email_index.remove(&email) else {
                continue;
            };
            self.users.remove(&uid);
            // "All user data": exam submissions go with the member.
            for exam in &mut self.exams {
                exam.results.retain(|r| r.uid != uid);
            }
            deleted.push(email);
        }
        deleted
    }

    /// Course ids the user holds (in any state) or has progress in, sorted.
    pub fn progress_course_ids(&self, user: &UserRec) -> Vec<String> {
        let mut ids: BTreeSet<String> = user.progress.keys().cloned().collect();
        for h in &user.holdings {
            ids.extend(self.offer_courses(&h.offer_id).iter().cloned());
        }
        ids.into_iter().collect()
    }

    /// Progress of one course, without the user block.
    pub fn progress_item(user: &UserRec, course_id: &str) -> CourseProgress {
        let p = user.progress.get(course_id);
        let ids = |v: Option<&Vec<String>>| -> Posts {
            Posts::Ids(
                v.map(|v| v.iter().cloned().map(PostRef).collect())
                    .unwrap_or_default(),
            )
        };
        CourseProgress {
            course_id: course_id.to_string(),
            active_posts: ids(p.map(|p| &p.active_posts)),
            completed_posts: ids(p.map(|p| &p.completed_posts)),
            user: None,
            extra: Extra::new(),
        }
    }

    /// A page of the user's progress list, keyed by course id.
    pub fn list_progress(
        &self,
        email: &str,
        last_loaded_id: Option<&str>,
        page_length: usize,
    ) -> Result<(Vec<CourseProgress>, Option<String>), SchoolError> {
        let user = self.user_by_email(email).ok_or(SchoolError::UserNotFound)?;
        let ids = self.progress_course_ids(user);
        let iter = ids
            .into_iter()
            .filter(|c| last_loaded_id.is_none_or(|last| c.as_str() > last))
            .map(|c| Self::progress_item(user, &c));
        Ok(paginate(iter, page_length, |p| p.course_id.clone()))
    }

    /// Progress of one user in one course, with the user block.
    pub fn course_progress(
        &self,
        email: &str,
        course_id: &str,
    ) -> Result<CourseProgress, SchoolError> {
        let user = self.user_by_email(email).ok_or(SchoolError::UserNotFound)?;
        if self.course(course_id).is_none() {
            return Err(SchoolError::CourseNotFound);
        }
        if !self
            .progress_course_ids(user)
            .iter()
            .any(|c| c == course_id)
        {
            return Err(SchoolError::NotEnrolled);
        }
        let mut item = Self::progress_item(user, course_id);
        item.user = Some(UserRef {
            uid: user.uid.clone(),
            email: user.email.clone(),
            firstname: user.firstname.clone(),
            name: user.name.clone(),
            extra: Extra::new(),
        });
        Ok(item)
    }

    /// Sets property values; all ids are checked before anything changes.
    pub fn set_properties(
        &mut self,
        email: &str,
        values: &[(String, String)],
    ) -> Result<String, SchoolError> {
        if self.uid_by_email(email).is_none() {
            return Err(SchoolError::UserNotFound);
        }
        if let Some((id, _)) = values
            .iter()
            .find(|(id, _)| !self.properties.iter().any(|p| &p.id == id))
        {
            return Err(SchoolError::PropertyNotFound(id.clone()));
        }
        let user = self.user_mut(email)?;
        for (id, value) in values {
            user.custom_properties.insert(id.clone(), value.clone());
        }
        Ok(user.uid.clone())
    }

    /// Unlocks a chapter for a user (idempotent). Returns the stored e-mail.
    pub fn enable_chapter(
        &mut self,
        email: &str,
        course_id: &str,
        chapter_id: &str,
        now: DateTime<Utc>,
    ) -> Result<String, SchoolError> {
        if self.uid_by_email(email).is_none() {
            return Err(SchoolError::UserNotFound);
        }
        let course = self.course(course_id).ok_or(SchoolError::CourseNotFound)?;
        if !course.chapters.iter().any(|c| c.id == chapter_id) {
            return Err(SchoolError::ChapterNotFound);
        }
        let user = self.user_mut(email)?;
        let known = user
            .unlocked_chapters
            .iter()
            .any(|u| u.course_id == course_id && u.chapter_id == chapter_id);
        if !known {
            user.unlocked_chapters.push(UnlockedChapter {
                course_id: course_id.to_string(),
                chapter_id: chapter_id.to_string(),
                enabled_at: now,
            });
        }
        Ok(user.email.clone())
    }

    pub fn exam_results(&self, exam_id: &str) -> Result<Vec<ExamResult>, SchoolError> {
        let exam = self
            .exams
            .iter()
            .find(|e| e.id == exam_id)
            .ok_or(SchoolError::ExamNotFound)?;
        Ok(exam
            .results
            .iter()
            .map(|r| ExamResult {
                uid: Some(r.uid.clone()),
                email: Some(r.email.clone()),
                score: Some(r.score),
                max_score: Some(exam.max_score),
                passed: Some(r.passed),
                submitted_at: Some(Timestamp(r.submitted_at)),
                extra: Extra::new(),
            })
            .collect())
    }

    /// Simulated member activity: a post is opened (active) or completed.
    pub fn record_progress(
        &mut self,
        email: &str,
        course_id: &str,
        post_id: &str,
        completed: bool,
    ) -> Result<Progress, SchoolError> {
        if self.uid_by_email(email).is_none() {
            return Err(SchoolError::UserNotFound);
        }
        let course = self.course(course_id).ok_or(SchoolError::CourseNotFound)?;
        let known = course
            .chapters
            .iter()
            .flat_map(|c| &c.posts)
            .any(|p| p.id == post_id);
        if !known {
            return Err(SchoolError::PostNotFound);
        }
        let user = self.user_mut(email)?;
        let p = user.progress.entry(course_id.to_string()).or_default();
        let post = post_id.to_string();
        if completed {
            p.active_posts.retain(|x| x != post_id);
            if !p.completed_posts.contains(&post) {
                p.completed_posts.push(post);
            }
        } else if !p.completed_posts.contains(&post) && !p.active_posts.contains(&post) {
            // Re-opening a completed post does not un-complete it.
            p.active_posts.push(post);
        }
        Ok(p.clone())
    }

    /// The admin view of a user: the wire user plus progress and unlocked chapters.
    pub fn user_admin_json(&self, user: &UserRec, now: DateTime<Utc>) -> Value {
        let mut v =
            serde_json::to_value(self.user_to_wire(user, now)).unwrap_or_else(|_| json!({}));
        if let Value::Object(map) = &mut v {
            let progress: Map<String, Value> = user
                .progress
                .iter()
                .map(|(c, p)| {
                    (
                        c.clone(),
                        json!({"activePosts": p.active_posts, "completedPosts": p.completed_posts}),
                    )
                })
                .collect();
            map.insert("progress".into(), Value::Object(progress));
            let unlocked: Vec<Value> = user
                .unlocked_chapters
                .iter()
                .map(|u| json!({"courseId": u.course_id, "chapterId": u.chapter_id}))
                .collect();
            map.insert("unlockedChapters".into(), Value::Array(unlocked));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single().unwrap()
    }

    fn course(id: &str, posts: &[&str]) -> Course {
        Course {
            id: id.into(),
            name: id.into(),
            chapters: vec![Chapter {
                id: format!("{id}-ch1"),
                name: "Kapitel 1".into(),
                posts: posts
                    .iter()
                    .map(|p| Post {
                        id: (*p).into(),
                        name: (*p).into(),
                    })
                    .collect(),
            }],
        }
    }

    fn offer(id: &str, courses: &[&str]) -> OfferDef {
        OfferDef {
            id: id.into(),
            name: id.into(),
            course_ids: courses.iter().map(|c| (*c).into()).collect(),
            priority: 0.0,
            updated_at: t(2026, 1, 1),
        }
    }

    fn user(uid: &str, email: &str, holdings: Vec<Holding>) -> UserRec {
        UserRec {
            uid: uid.into(),
            email: email.into(),
            firstname: Some("F".into()),
            name: Some("L".into()),
            created_at: t(2025, 1, 1),
            holdings,
            custom_properties: BTreeMap::new(),
            progress: BTreeMap::new(),
            unlocked_chapters: Vec::new(),
        }
    }

    fn held(offer: &str, active: bool, order: Option<&str>) -> Holding {
        Holding {
            offer_id: offer.into(),
            active,
            order_id: order.map(Into::into),
            expires_at: None,
        }
    }

    /// o1 -> c1, o2 -> c1+c2, o3 -> c3.
    fn school() -> School {
        let mut s = School {
            offers: vec![
                offer("o1", &["c1"]),
                offer("o2", &["c1", "c2"]),
                offer("o3", &["c3"]),
            ],
            courses: vec![
                course("c1", &["p1", "p2"]),
                course("c2", &["q1"]),
                course("c3", &["r1"]),
            ],
            properties: vec![PropertyDef {
                id: "prop1".into(),
                name: "Firma".into(),
                kind: "text".into(),
            }],
            ..School::default()
        };
        let mut a = user(
            "a",
            "a@x.de",
            vec![held("o1", true, None), held("o2", true, Some("ORD"))],
        );
        a.progress.insert(
            "c1".into(),
            Progress {
                active_posts: vec!["p2".into()],
                completed_posts: vec!["p1".into()],
            },
        );
        a.progress.insert(
            "c2".into(),
            Progress {
                active_posts: vec!["q1".into()],
                completed_posts: vec![],
            },
        );
        s.insert_user(a);
        s.insert_user(user("b", "b@x.de", vec![held("o1", false, None)]));
        s.insert_user(user("c", "c@x.de", vec![]));
        s.insert_user(user(
            "d",
            "d@x.de",
            vec![
                held("o3", true, Some("ORD2")),
                held("o1", true, Some("ORD2")),
            ],
        ));
        s
    }

    fn uids(page: &(Vec<&UserRec>, Option<String>)) -> Vec<String> {
        page.0.iter().map(|u| u.uid.clone()).collect()
    }

    #[test]
    fn list_filters_combine() {
        let s = school();
        let now = t(2026, 6, 1);
        let f = |offer: Option<&str>, course: Option<&str>, active: Option<bool>| UserFilter {
            offer_id: offer.map(Into::into),
            course_id: course.map(Into::into),
            active,
        };
        let list = |f: UserFilter| uids(&s.list_users(None, 100, &f, now));
        assert_eq!(list(f(None, None, None)), ["a", "b", "c", "d"]);
        assert_eq!(list(f(Some("o1"), None, None)), ["a", "b", "d"]);
        assert_eq!(list(f(Some("o1"), None, Some(true))), ["a", "d"]);
        assert_eq!(list(f(Some("o1"), None, Some(false))), ["b"]);
        assert_eq!(list(f(None, Some("c2"), None)), ["a"]);
        assert_eq!(list(f(None, None, Some(false))), ["b", "c"]);
        assert_eq!(list(f(None, None, Some(true))), ["a", "d"]);
        assert_eq!(list(f(Some("nope"), None, None)), Vec::<String>::new());
        assert_eq!(list(f(Some("o3"), Some("c3"), None)), ["d"]);
        assert_eq!(list(f(Some("o3"), Some("c1"), None)), Vec::<String>::new());
    }

    #[test]
    fn pagination_has_no_empty_last_page_and_survives_deletes() {
        let mut s = school();
        let now = t(2026, 6, 1);
        let all = UserFilter::default();
        let p1 = s.list_users(None, 2, &all, now);
        assert_eq!(
            (uids(&p1), p1.1.clone()),
            (
                vec!["a".to_string(), "b".to_string()],
                Some("b".to_string())
            )
        );
        s.delete_users(["b@x.de"]);
        let p2 = s.list_users(Some("b"), 2, &all, now);
        assert_eq!(
            (uids(&p2), p2.1.clone()),
            (vec!["c".to_string(), "d".to_string()], None)
        );
    }

    #[test]
    fn grant_creates_user_and_reactivates() {
        let mut s = school();
        let now = t(2026, 6, 1);
        let uid = s
            .grant(
                Grant {
                    email: " New@X.de ".into(),
                    offer_id: "o1".into(),
                    firstname: Some("N".into()),
                    name: Some("Neu".into()),
                    order_id: None,
                },
                now,
                || "zz".into(),
            )
            .unwrap();
        assert_eq!(uid, "zz");
        let u = s.user_by_email("new@x.de").unwrap();
        assert_eq!(
            (u.email.as_str(), u.created_at, u.firstname.as_deref()),
            ("new@x.de", now, Some("N"))
        );
        assert_eq!(u.holdings, vec![held("o1", true, None)]);

        // Existing, revoked and expired: re-activated, expiry cleared, order kept.
        s.users.get_mut("b").unwrap().holdings[0].expires_at = Some(t(2026, 1, 1));
        s.users.get_mut("b").unwrap().holdings[0].order_id = Some("OLD".into());
        let g = Grant {
            email: "B@x.de".into(),
            offer_id: "o1".into(),
            ..Grant::default()
        };
        s.grant(g, now, || unreachable!()).unwrap();
        assert_eq!(s.users["b"].holdings, vec![held("o1", true, Some("OLD"))]);
        assert_eq!(
            s.users["b"].firstname.as_deref(),
            Some("F"),
            "names are not overwritten"
        );

        let g = Grant {
            email: "b@x.de".into(),
            offer_id: "nope".into(),
            ..Grant::default()
        };
        assert_eq!(
            s.grant(g, now, || "x".into()),
            Err(SchoolError::OfferNotFound)
        );
    }

    #[test]
    fn revoke_keeps_progress_and_remove_deletes_uncovered_progress() {
        let mut s = school();
        s.set_offer_state("a@x.de", "o2", Some(false)).unwrap();
        assert!(!s.users["a"].holdings[1].active);
        assert_eq!(s.users["a"].progress.len(), 2);
        s.set_offer_state("a@x.de", "o2", Some(true)).unwrap();
        assert!(s.users["a"].holdings[1].active);

        // Removing o2: c2 progress goes, c1 stays because o1 still grants it.
        s.set_offer_state("A@X.DE", "o2", None).unwrap();
        assert_eq!(s.users["a"].holdings, vec![held("o1", true, None)]);
        assert_eq!(s.users["a"].progress.keys().collect::<Vec<_>>(), ["c1"]);

        assert_eq!(
            s.set_offer_state("a@x.de", "o3", None),
            Err(SchoolError::HoldingNotFound)
        );
        assert_eq!(
            s.set_offer_state("zz@x.de", "o1", None),
            Err(SchoolError::UserNotFound)
        );
    }

    #[test]
    fn order_state_switches_every_holding_of_the_order() {
        let mut s = school();
        s.set_order_state("d@x.de", "ORD2", Some(false)).unwrap();
        assert!(s.users["d"].holdings.iter().all(|h| !h.active));
        s.set_order_state("d@x.de", "ORD2", Some(true)).unwrap();
        assert!(s.users["d"].holdings.iter().all(|h| h.active));
        s.set_order_state("d@x.de", "ORD2", None).unwrap();
        assert!(s.users["d"].holdings.is_empty());
        assert_eq!(
            s.set_order_state("d@x.de", "ORD2", None),
            Err(SchoolError::OrderNotFound)
        );
    }

    #[test]
    fn expiry_makes_holding_effectively_inactive() {
        let mut s = school();
        s.set_offer_expires("a@x.de", "o1", Some(t(2026, 3, 1)))
            .unwrap();
        let before = s.user_to_wire(&s.users["a"], t(2026, 2, 1));
        let after = s.user_to_wire(&s.users["a"], t(2026, 3, 1));
        assert!(before.offers[0].active);
        assert!(
            !after.offers[0].active,
            "expiry at exactly now counts as passed"
        );
        assert!(
            s.users["a"].holdings[0].active,
            "the stored flag is untouched"
        );
        let f = UserFilter {
            offer_id: Some("o1".into()),
            active: Some(false),
            ..UserFilter::default()
        };
        assert_eq!(uids(&s.list_users(None, 10, &f, t(2026, 4, 1))), ["a", "b"]);
        s.set_offer_expires("a@x.de", "o1", None).unwrap();
        assert!(s.user_to_wire(&s.users["a"], t(2030, 1, 1)).offers[0].active);
        assert_eq!(
            s.set_offer_expires("c@x.de", "o1", None),
            Err(SchoolError::HoldingNotFound)
        );
    }

    #[test]
    fn delete_ignores_unknown_and_reports_lowercase() {
        let mut s = school();
        let deleted = s.delete_users(["A@X.de", "nobody@x.de", "a@x.de", "not-an-email"]);
        assert_eq!(deleted, ["a@x.de"]);
        assert!(s.user_by_email("a@x.de").is_none());
        assert_eq!(s.users.len(), 3);
    }

    #[test]
    fn progress_listing_and_single_course() {
        let s = school();
        let (items, next) = s.list_progress("a@x.de", None, 1).unwrap();
        assert_eq!(
            (items[0].course_id.as_str(), next.as_deref()),
            ("c1", Some("c1"))
        );
        let (items, next) = s.list_progress("a@x.de", Some("c1"), 1).unwrap();
        assert_eq!((items[0].course_id.as_str(), next), ("c2", None));
        assert_eq!(
            items[0].active_posts,
            Posts::Ids(vec![PostRef("q1".into())])
        );

        let one = s.course_progress("a@x.de", "c1").unwrap();
        assert_eq!(one.completed_posts, Posts::Ids(vec![PostRef("p1".into())]));
        assert_eq!(one.user.map(|u| u.uid), Some("a".into()));
        assert_eq!(
            s.course_progress("a@x.de", "c3"),
            Err(SchoolError::NotEnrolled)
        );
        assert_eq!(
            s.course_progress("a@x.de", "c9"),
            Err(SchoolError::CourseNotFound)
        );
        // A revoked holder still sees (empty) progress of the course.
        assert!(
            s.course_progress("b@x.de", "c1")
                .unwrap()
                .active_posts
                .count()
                == 0
        );
    }

    #[test]
    fn properties_are_checked_before_any_change() {
        let mut s = school();
        let bad = [
            ("prop1".to_string(), "ACME".to_string()),
            ("nope".to_string(), "x".to_string()),
        ];
        assert_eq!(
            s.set_properties("a@x.de", &bad),
            Err(SchoolError::PropertyNotFound("nope".into()))
        );
        assert!(s.users["a"].custom_properties.is_empty());
        s.set_properties("a@x.de", &bad[..1]).unwrap();
        assert_eq!(s.users["a"].custom_properties["prop1"], "ACME");
    }

    #[test]
    fn chapters_and_activity() {
        let mut s = school();
        let now = t(2026, 6, 1);
        assert_eq!(
            s.enable_chapter("c@x.de", "c1", "c2-ch1", now),
            Err(SchoolError::ChapterNotFound)
        );
        s.enable_chapter("C@x.de", "c1", "c1-ch1", now).unwrap();
        s.enable_chapter("c@x.de", "c1", "c1-ch1", now).unwrap();
        assert_eq!(s.users["c"].unlocked_chapters.len(), 1);

        s.record_progress("c@x.de", "c1", "p1", false).unwrap();
        let p = s.record_progress("c@x.de", "c1", "p1", true).unwrap();
        assert_eq!((p.active_posts.len(), p.completed_posts.len()), (0, 1));
        let p = s.record_progress("c@x.de", "c1", "p1", false).unwrap();
        assert_eq!((p.active_posts.len(), p.completed_posts.len()), (0, 1));
        assert_eq!(
            s.record_progress("c@x.de", "c1", "q1", true),
            Err(SchoolError::PostNotFound)
        );
    }

    #[test]
    fn index_rejects_duplicate_emails() {
        let mut s = school();
        let mut dup = s.users["a"].clone();
        dup.uid = "zz".into();
        s.users.insert("zz".into(), dup);
        assert!(s.rebuild_index().is_err());
    }
}
