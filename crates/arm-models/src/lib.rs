//! placeholder: ARM DTOs
