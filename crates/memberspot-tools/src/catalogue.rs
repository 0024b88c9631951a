use futures::FutureExt;
use futures::future::BoxFuture;
use memberspot_api::Client;
use serde::Deserialize;
use serde_json::Value;

use crate::schema::{input_schema_for, output_schema_for};
use crate::tools::*;
use crate::{Tool, ToolDescriptor, ToolError};

type CallFn = for<'a> fn(&'a Client, Value) -> BoxFuture<'a, Result<Value, ToolError>>;
type CheckFn = fn(&Value) -> Result<(), ToolError>;

/// A tool with its types erased, ready for dispatch by name.
pub struct ToolEntry {
    pub descriptor: ToolDescriptor,
    call: CallFn,
    check: CheckFn,
}

impl std::fmt::Debug for ToolEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolEntry")
            .field("name", &self.descriptor.name)
            .finish()
    }
}

impl ToolEntry {
    fn of<T: Tool>() -> Self {
        ToolEntry {
            descriptor: ToolDescriptor {
                name: T::NAME,
                title: T::TITLE,
                description: T::DESCRIPTION,
                input_schema: input_schema_for::<T::Input>(),
                output_schema: output_schema_for::<T::Output>(),
                annotations: T::ANNOTATIONS,
                class: T::ANNOTATIONS.class(),
                offer_scope: T::OFFER_SCOPE,
                secret_output_fields: T::SECRET_OUTPUT_FIELDS,
            },
            call: |client, args| call_typed::<T>(client, args).boxed(),
            check: |args| decode::<T>(args).map(|_| ()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.descriptor.name
    }

    /// Validates arguments without calling Memberspot.
    pub fn validate(&self, args: &Value) -> Result<(), ToolError> {
        (self.check)(args)
    }

    /// A result as it may be recorded (audit log, run history): secret fields replaced
    /// by their fingerprint. The caller gets the result itself.
    pub fn redact_for_record(&self, result: &Value) -> Value {
        if self.descriptor.secret_output_fields.is_empty() {
            return result.clone();
        }
        crate::redact::redact_fields(result, self.descriptor.secret_output_fields)
    }

    /// The secret texts in a result, to find copies of them in what is recorded later.
    pub fn secrets_in(&self, result: &Value) -> Vec<String> {
        crate::redact::secrets_at(result, self.descriptor.secret_output_fields)
    }

    /// Validates, then calls.
    pub async fn call(&self, client: &Client, args: Value) -> Result<Value, ToolError> {
        (self.call)(client, args).await
    }
}

async fn call_typed<T: Tool>(client: &Client, args: Value) -> Result<Value, ToolError> {
    let input = decode::<T>(&args)?;
    let output = T::run(client, input).await?;
    serde_json::to_value(output).map_err(|e| ToolError::InvalidArguments {
        field: None,
        message: format!("result could not be encoded: {e}"),
    })
}

/// Decodes and checks arguments; errors name the offending field.
fn decode<T: Tool>(args: &Value) -> Result<T::Input, ToolError> {
    let empty = Value::Object(Default::default());
    let args = match args {
        Value::Null => &empty,
        Value::Object(_) => args,
        other => {
            return Err(ToolError::InvalidArguments {
                field: None,
                message: format!("arguments must be a JSON object, got {}", json_kind(other)),
            });
        }
    };
    // Tracking the path costs on every call; it is only needed for the error message.
    let input = match T::Input::deserialize(args) {
        Ok(input) => input,
        Err(_) => serde_path_to_error::deserialize(args).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            let field = if path == "." {
                backticked(&message)
            } else {
                Some(path)
            };
            ToolError::InvalidArguments { field, message }
        })?,
    };
    T::check(&input)?;
    Ok(input)
}

/// serde names missing and unknown fields in backticks.
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The set of tools, in a stable (alphabetical) order.
#[derive(Debug)]
pub struct Catalogue {
    entries: Vec<ToolEntry>,
}

impl Catalogue {
    /// Every Memberspot tool.
    pub fn standard() -> Self {
        let mut entries = vec![
            ToolEntry::of::<CreateLoginTokenTool>(),
            ToolEntry::of::<DeleteUsersTool>(),
            ToolEntry::of::<DeleteUsersPostTool>(),
            ToolEntry::of::<EnableChapterAccessTool>(),
            ToolEntry::of::<FindUserByEmailTool>(),
            ToolEntry::of::<GetUserCourseProgressTool>(),
            ToolEntry::of::<GrantOfferBulkTool>(),
            ToolEntry::of::<GrantUserOfferByEmailTool>(),
            ToolEntry::of::<ListCustomUserPropertiesTool>(),
            ToolEntry::of::<ListExamResultsTool>(),
            ToolEntry::of::<ListOffersTool>(),
            ToolEntry::of::<ListUserCourseProgressTool>(),
            ToolEntry::of::<ListUsersTool>(),
            ToolEntry::of::<SetCustomUserPropertiesTool>(),
            ToolEntry::of::<SetOfferExpirationTool>(),
            ToolEntry::of::<SetOrderStateTool>(),
            ToolEntry::of::<SetUserOfferStateTool>(),
        ];
        entries.sort_by_key(|e| e.name());
        Catalogue { entries }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ToolEntry> {
        self.entries.iter()
    }

    pub fn descriptors(&self) -> impl Iterator<Item = &ToolDescriptor> {
        self.entries.iter().map(|e| &e.descriptor)
    }

    pub fn get(&self, name: &str) -> Option<&ToolEntry> {
        self.entries.iter().find(|e| e.name() == name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The single dispatch entry point: tool name + JSON arguments -> JSON result.
    pub async fn call(&self, client: &Client, name: &str, args: Value) -> Result<Value, ToolError> {
        let entry = self.get(name).ok_or_else(|| ToolError::UnknownTool {
            name: name.to_string(),
        })?;
        entry.call(client, args).await
    }

    /// Validates arguments for `name` without calling Memberspot.
    pub fn validate(&self, name: &str, args: &Value) -> Result<(), ToolError> {
        let entry = self.get(name).ok_or_else(|| ToolError::UnknownTool {
            name: name.to_string(),
        })?;
        entry.validate(args)
    }
}
