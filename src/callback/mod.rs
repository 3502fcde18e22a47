//! An incoming callback, from bytes to a [`RecordingEvent`](crate::event::RecordingEvent):
//! [`decode`] turns a form body, query string or JSON body into fields (or a 400),
//! [`validate()`] turns fields into a typed event (or a 422 naming every bad field).

pub mod decode;
pub mod validate;

pub use decode::{BodyKind, DecodeError, Fields, decode_form, decode_json, kind_of};
pub use validate::{FieldError, validate};
