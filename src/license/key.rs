//! The portal key an admin pastes: grouped, case-insensitive, with a check
//! character so that a typo is caught before any network call.
