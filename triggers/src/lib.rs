//! Trigger filters and dispatcher.
