//! The member list and a member's progress list through the gateway: every page is a
//! typed, audited call ([`Hub::run_on`]) of the same principal with the same context, and
//! the pages are followed by the API crate's rules ([`memberspot_api::cursor_stream`]):
//! a short or empty page or a missing cursor ends the list, a cursor given before ends it
//! with an error ([`HubError::is_repeated_cursor`]) instead of looping.

use std::sync::Arc;

use futures::Stream;
use futures::future::BoxFuture;
use memberspot_api::wire::{CourseProgress, User};
use memberspot_api::{Client, Page, cursor_stream};
use memberspot_tools::Tool;
use memberspot_tools::inputs::{Id, PageLength};
use memberspot_tools::tools::{
    ListProgressInput, ListUserCourseProgressTool, ListUsersInput, ListUsersTool,
};

use crate::{CallContext, Hub, HubError, Principal};

/// Waited for before each page (a consumer's own pacing, a call counter).
pub type PageHook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// How a list is read beyond its filter.
#[derive(Clone, Default)]
pub struct ListOptions {
    /// Stop after this many items.
    pub max_items: Option<usize>,
    /// Call on this client instead of the principal's stored connection (as
    /// [`Hub::call_on`]).
    pub client: Option<Client>,
    /// Awaited before each page is asked for.
    pub before_page: Option<PageHook>,
}

impl Hub {
    /// Every member matching `filter` (its `cursor` is where the list starts; its
    /// `page_length` the page size, the API's largest when unset), each page a
    /// `list_users` call of `who` with `ctx`.
    pub fn users_stream(
        &self,
        who: &Principal,
        ctx: &CallContext,
        mut filter: ListUsersInput,
        options: ListOptions,
    ) -> impl Stream<Item = Result<User, HubError>> + Send + use<> {
        filter.page_length.get_or_insert(PageLength::LARGEST);
        self.pages::<ListUsersTool, _, _>(
            who,
            ctx,
            options,
            move |cursor| {
                let mut input = filter.clone();
                if cursor.is_some() {
                    input.cursor = cursor;
                }
                input
            },
            |out| Page {
                items: out.users,
                next: out.next_cursor,
            },
        )
    }

    /// A member's progress in every course (`request.email`), each page a
    /// `list_user_course_progress` call of `who` with `ctx`.
    pub fn progress_stream(
        &self,
        who: &Principal,
        ctx: &CallContext,
        mut request: ListProgressInput,
        options: ListOptions,
    ) -> impl Stream<Item = Result<CourseProgress, HubError>> + Send + use<> {
        request.page_length.get_or_insert(PageLength::LARGEST);
        self.pages::<ListUserCourseProgressTool, _, _>(
            who,
            ctx,
            options,
            move |cursor| {
                let mut input = request.clone();
                if cursor.is_some() {
                    input.cursor = cursor;
                }
                input
            },
            |out| Page {
                items: out.progress,
                next: out.next_cursor,
            },
        )
    }

    /// The pages of `T` as one stream. A persona is read again before each page, so a
    /// revocation applies to the next page (the hub refuses it and records the attempt).
    fn pages<T: Tool, I, F>(
        &self,
        who: &Principal,
        ctx: &CallContext,
        options: ListOptions,
        input_for: F,
        split: fn(T::Output) -> Page<I>,
    ) -> impl Stream<Item = Result<I, HubError>> + Send + use<T, I, F>
    where
        I: Send + 'static,
        F: Fn(Option<Id>) -> T::Input + Send + Sync + 'static,
    {
        let hub = self.clone();
        let who = who.clone();
        let ctx = ctx.clone();
        let input_for = Arc::new(input_for);
        let ListOptions {
            max_items,
            client,
            before_page,
        } = options;
        cursor_stream(max_items, move |cursor| {
            let (hub, who, ctx, client) = (hub.clone(), who.clone(), ctx.clone(), client.clone());
            let (input_for, before_page) = (input_for.clone(), before_page.clone());
            async move {
                let cursor = match cursor {
                    Some(c) => Some(Id::parse(&c).map_err(|e| {
                        HubError::from(memberspot_api::ApiError::Decode {
                            status: 200,
                            path: "nextPage".into(),
                            message: e,
                        })
                    })?),
                    None => None,
                };
                let who = hub.current(&who).await?;
                if let Some(hook) = &before_page {
                    hook().await;
                }
                let out = hub
                    .run_on::<T>(&who, &ctx, input_for(cursor), client)
                    .await?;
                Ok(split(out))
            }
        })
    }
}
