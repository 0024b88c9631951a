use memberspot_api::actions::ListExamResults;
use memberspot_api::{ApiError, Client};
use memberspot_wire::ExamResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::READ;
use crate::inputs::Id;
use crate::{Annotations, OfferScope, Tool};

pub struct ListExamResultsTool;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExamInput {
    /// Id of the exam (quiz).
    pub exam_id: Id,
}

/// Every submission of one exam.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExamResultsOutput {
    pub results: Vec<ExamResult>,
}

impl Tool for ListExamResultsTool {
    type Input = ExamInput;
    type Output = ExamResultsOutput;
    const NAME: &'static str = "list_exam_results";
    const TITLE: &'static str = "List exam results";
    const DESCRIPTION: &'static str = paced!(
        "List every member's submissions of one exam (quiz) with score, maximum score, pass/fail and submission time. Read-only. The API has no call to list exams; the exam id comes from the Memberspot dashboard. Fails with not_found for an unknown exam."
    );
    const ANNOTATIONS: Annotations = READ;
    const OFFER_SCOPE: OfferScope = OfferScope::NotApplicable;

    async fn run(client: &Client, input: Self::Input) -> Result<Self::Output, ApiError> {
        Ok(ExamResultsOutput {
            results: client
                .execute(&ListExamResults::new(input.exam_id.as_str()))
                .await?
                .0,
        })
    }
}
