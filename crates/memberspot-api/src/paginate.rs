//! Pagination as streams that follow the `nextPage` cursor and cannot loop
//! forever (a repeated cursor, a short page or an empty page ends the stream).

use futures::{Stream, StreamExt, TryStreamExt, stream};
use memberspot_wire::{CourseProgress, User};

use crate::actions::{Action, ListUserCourseProgress, ListUsers};
use crate::{ApiError, Client};

/// Page length used when a stream's action does not set one.
const DEFAULT_PAGE_LENGTH: u32 = 50;

/// A list action that pages with `lastLoadedId`/`pageLength`/`nextPage`.
pub trait Paged: Action + Sized + 'static {
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

/// Every item of a paged list, at most `max_items`.
pub fn paged_stream<A: Paged>(
    client: &Client,
    mut first: A,
    max_items: Option<usize>,
) -> impl Stream<Item = Result<A::Item, ApiError>> + Send + 'static
where
    A::Output: Send,
{
    let page_length = *first.page_length_mut().get_or_insert(DEFAULT_PAGE_LENGTH) as usize;
    let client = client.clone();
    stream::try_unfold((Some(first), None::<String>), move |(next, last_cursor)| {
        let client = client.clone();
        async move {
            let Some(action) = next else { return Ok(None) };
            let (items, cursor) = A::split(client.execute(&action).await?);
            let follow = match cursor {
                Some(c) if items.len() >= page_length && last_cursor.as_ref() != Some(&c) => {
                    Some((action.continue_after(c.clone()), Some(c)))
                }
                _ => None,
            };
            let state = follow.map_or((None, None), |(a, c)| (Some(a), c));
            Ok(Some((items, state)))
        }
    })
    .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
    .try_flatten()
    .take(max_items.unwrap_or(usize::MAX))
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
