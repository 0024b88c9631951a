//! Error types. Messages never contain secrets or signature values.

use thiserror::Error;

/// Why a delivery was rejected. [`VerifyError::reason`] gives the stable
/// machine string used by the test vectors (`expected.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// No secret/passphrase/token configured: we fail closed.
    #[error("no secret configured for this provider")]
    NoSecretConfigured,
    /// Digistore24 receiver has no (or an empty) passphrase.
    #[error("no Digistore24 passphrase configured")]
    NoPassphraseConfigured,
    /// The signature header is absent or empty.
    #[error("signature header missing")]
    MissingHeader,
    /// The signature header could not be parsed (e.g. no `t=`).
    #[error("signature header malformed")]
    MalformedHeader,
    /// A Stripe header without any `v1=` element.
    #[error("no v1 signature in header")]
    NoV1Signature,
    /// The signature does not match the body.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// The signed timestamp is outside the accepted window.
    #[error("timestamp outside tolerance")]
    TimestampOutsideTolerance,
    /// The signature is not in the provider's encoding (e.g. hex instead of base64).
    #[error("signature encoding mismatch")]
    EncodingMismatch,
    /// Digistore24: no `sha_sign`/`SHASIGN` field.
    #[error("signature field missing")]
    MissingSignature,
    /// ThriveCart: no `thrivecart_secret` field.
    #[error("secret field missing")]
    MissingSecret,
    /// ThriveCart: `thrivecart_secret` differs from the secret word.
    #[error("secret mismatch")]
    SecretMismatch,
    /// URL-token providers (elopage, Memberspot): no token in the URL.
    #[error("URL token missing")]
    TokenMissing,
    /// URL-token providers: token differs.
    #[error("URL token mismatch")]
    TokenMismatch,
    /// The body is not parseable enough to find the signature fields.
    #[error("body malformed")]
    MalformedBody,
    /// PayPal IPN: verification needs the post-back (see [`crate::paypal`]).
    #[error("PayPal IPN requires a post-back to PayPal")]
    PostbackRequired,
    /// PayPal answered `INVALID`.
    #[error("PayPal answered INVALID")]
    PaypalSaysInvalid,
    /// PayPal answered 200 with something other than VERIFIED/INVALID.
    #[error("unexpected PayPal post-back answer, retry later")]
    UnexpectedResponseRetryLater,
    /// PayPal post-back failed at HTTP level, retry later.
    #[error("PayPal post-back transport error, retry later")]
    TransportErrorRetryLater,
}

impl VerifyError {
    /// Stable machine string (matches the vectors' `expected.reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoSecretConfigured => "no_secret_configured",
            Self::NoPassphraseConfigured => "no_passphrase_configured",
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader => "malformed_header",
            Self::NoV1Signature => "no_v1_signature",
            Self::SignatureMismatch => "signature_mismatch",
            Self::TimestampOutsideTolerance => "timestamp_outside_tolerance",
            Self::EncodingMismatch => "encoding_mismatch",
            Self::MissingSignature => "missing_signature",
            Self::MissingSecret => "missing_secret",
            Self::SecretMismatch => "secret_mismatch",
            Self::TokenMissing => "token_missing",
            Self::TokenMismatch => "token_mismatch",
            Self::MalformedBody => "malformed_body",
            Self::PostbackRequired => "postback_required",
            Self::PaypalSaysInvalid => "paypal_says_invalid",
            Self::UnexpectedResponseRetryLater => "unexpected_response_retry_later",
            Self::TransportErrorRetryLater => "transport_error_retry_later",
        }
    }

    /// True when the caller should answer with a retryable status (5xx) rather
    /// than treat the delivery as forged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::UnexpectedResponseRetryLater | Self::TransportErrorRetryLater
        )
    }
}

/// Why a (verified) body could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Body is not valid JSON (or not a JSON object).
    #[error("invalid JSON body: {0}")]
    Json(String),
    /// A required field is missing.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
}
