use memberspot_wire::{ExamResult, ListOf};
use reqwest::Method;

use super::{Action, Idempotency, seg};

/// `GET /exams/{examId}/results`: every submission of one exam.
#[derive(Debug, Clone, PartialEq)]
pub struct ListExamResults {
    pub exam_id: String,
}

impl ListExamResults {
    pub fn new(exam_id: impl Into<String>) -> Self {
        Self {
            exam_id: exam_id.into(),
        }
    }
}

impl Action for ListExamResults {
    type Output = ListOf<ExamResult>;
    const NAME: &'static str = "list_exam_results";
    const METHOD: Method = Method::GET;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn path(&self) -> String {
        format!("/exams/{}/results", seg(&self.exam_id))
    }
}
