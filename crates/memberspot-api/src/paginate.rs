//! Pagination as streams that follow the `nextPage` cursor and cannot loop forever.
//!
//! The rules live in [`cursor_stream`], whoever fetches the pages (the client here, the
//! gateway's audited calls in `memberspot-hub`): a missing or empty cursor or an empty page
//! ends the stream; a cursor given before ends it with [`ApiError::RepeatedCursor`], since
//! stopping there could silently miss items. A *short* page with a cursor is followed: the
//! school's largest page is not known, and a school that caps pages below the length asked
//! for would otherwise end every list after its first page (and the poller would take the
//! members it did not read for deleted). Following it costs at most one empty page.

use std::collections::HashSet;
use std::future::Future;

use futures::{Stream, StreamExt, TryStreamExt, stream};
use memberspot_wire::{CourseProgress, User};

use crate::actions::{Action, ListUserCourseProgress, ListUsers};
use crate::{ApiError, Client};

/// Page length used when a stream's action does not set one.
pub const DEFAULT_PAGE_LENGTH: u32 = 50;

/// One page of a list: its items and the cursor of the next page, as answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A list action that pages with `lastLoadedId`/`pageLength`/`nextPage`.
pub trait Paged: Action + Clone + Sized + Send + Sync + 'static {
    type Item: Send + 'static;
    fn page_length_mut(&mut self) -> &mut Option<u32>;
    fn continue_after(self, cursor: String) -> Self;
    fn split(page: Self::Output) -> (Vec<Self::Item>, Option<String>);
}

impl Paged for ListUsers {
    type Item = User;
    fn page_length_mut(&mut self) -> &mut Option<u32> {
        &mut self.query.page_length
    }
    fn continue_after(self, cursor: String) -> Self {
        self.after(cursor)
    }
    fn split(page: Self::Output) -> (Vec<User>, Option<String>) {
        (page.users, page.next_page)
    }
}

impl Paged for ListUserCourseProgress {
    type Item = CourseProgress;
    fn page_length_mut(&mut self) -> &mut Option<u32> {
        &mut self.page.page_length
    }
    fn continue_after(self, cursor: String) -> Self {
        self.after(cursor)
    }
    fn split(page: Self::Output) -> (Vec<CourseProgress>, Option<String>) {
        (page.progress, page.next_page)
    }
}

/// Every item of a list whose pages `fetch(cursor)` gets (`None` for the first page), at
/// most `max_items`. The one place the paging rules are written (see the module
/// documentation); the page length is the fetcher's.
pub fn cursor_stream<T, E, F, Fut>(
    max_items: Option<usize>,
    fetch: F,
) -> impl Stream<Item = Result<T, E>> + Send + 'static
where
    T: Send + 'static,
    E: From<ApiError> + Send + 'static,
    F: FnMut(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, E>> + Send + 'static,
{
    struct State<F> {
        fetch: F,
        /// The cursor of the next page to fetch (`Some(None)`: the first); `None`: done.
        next: Option<Option<String>>,
        seen: HashSet<String>,
    }
    let start = State {
        fetch,
        next: Some(None),
        seen: HashSet::new(),
    };
    stream::try_unfold(start, move |mut st| async move {
        let Some(cursor) = st.next.take() else {
            return Ok(None);
        };
        let page = (st.fetch)(cursor).await?;
        st.next = match page.next.filter(|c| !c.is_empty()) {
            Some(c) if !page.items.is_empty() => {
                if !st.seen.insert(c.clone()) {
                    return Err(E::from(ApiError::RepeatedCursor { cursor: c }));
                }
                Some(Some(c))
            }
            _ => None,
        };
        Ok(Some((page.items, st)))
    })
    .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
    .try_flatten()
    .take(max_items.unwrap_or(usize::MAX))
}

/// Every item of a paged list, at most `max_items`.
pub fn paged_stream<A: Paged>(
    client: &Client,
    mut first: A,
    max_items: Option<usize>,
) -> impl Stream<Item = Result<A::Item, ApiError>> + Send + 'static
where
    A::Output: Send,
{
    first.page_length_mut().get_or_insert(DEFAULT_PAGE_LENGTH);
    let client = client.clone();
    cursor_stream(max_items, move |cursor| {
        let client = client.clone();
        let action = match cursor {
            None => first.clone(),
            Some(c) => first.clone().continue_after(c),
        };
        async move {
            let (items, next) = A::split(client.execute(&action).await?);
            Ok(Page { items, next })
        }
    })
}

/// Every member matching `filter`, at most `max_items`.
pub fn users_stream(
    client: &Client,
    filter: ListUsers,
    max_items: Option<usize>,
) -> impl Stream<Item = Result<User, ApiError>> + Send + 'static {
    paged_stream(client, filter, max_items)
}

/// A member's progress in every course, at most `max_items`.
pub fn progress_stream(
    client: &Client,
    request: ListUserCourseProgress,
    max_items: Option<usize>,
) -> impl Stream<Item = Result<CourseProgress, ApiError>> + Send + 'static {
    paged_stream(client, request, max_items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(
        script: Vec<(Vec<u32>, Option<&'static str>)>,
    ) -> impl Stream<Item = Result<u32, ApiError>> {
        let script = std::sync::Arc::new(std::sync::Mutex::new(script.into_iter()));
        cursor_stream(None, move |_cursor| {
            let next = script.lock().ok().and_then(|mut s| s.next());
            async move {
                let (items, next) = next.unwrap_or_default();
                Ok(Page {
                    items,
                    next: next.map(str::to_owned),
                })
            }
        })
    }

    #[tokio::test]
    async fn follows_cursors_until_an_empty_page_or_none() {
        // A school that caps its pages below the length asked for: short pages with a
        // cursor are followed, an empty page ends the list.
        let all: Vec<u32> = pages(vec![
            (vec![1, 2], Some("a")),
            (vec![3, 4], Some("b")),
            (vec![5], Some("c")),
            (vec![6], Some("d")),
            (vec![], Some("e")),
            (vec![7, 8], None),
        ])
        .try_collect()
        .await
        .expect("pages");
        assert_eq!(all, vec![1, 2, 3, 4, 5, 6]);
        let all: Vec<u32> = pages(vec![(vec![1, 2], Some("a")), (vec![3, 4], None)])
            .try_collect()
            .await
            .expect("pages");
        assert_eq!(all, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_repeated_cursor_is_an_error_not_a_loop() {
        // Also a cursor that comes back later than on the next page (a → b → a).
        for script in [
            vec![(vec![1, 2], Some("a")), (vec![3, 4], Some("a"))],
            vec![
                (vec![1, 2], Some("a")),
                (vec![3, 4], Some("b")),
                (vec![5, 6], Some("a")),
            ],
        ] {
            let e = pages(script)
                .try_collect::<Vec<u32>>()
                .await
                .expect_err("repeats");
            assert!(
                matches!(&e, ApiError::RepeatedCursor { cursor } if cursor == "a"),
                "{e:?}"
            );
        }
    }
}
