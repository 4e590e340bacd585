//! Client-server API handlers, one file per spec area.

pub mod account;
pub mod account_data;
pub mod account_validity;
pub mod aliases;
pub mod backup;
pub mod devices;
pub mod directory;
pub mod discovery;
pub mod keys;
pub mod login;
pub mod media;
pub mod membership;
pub mod messages;
pub mod profile;
pub mod push;
pub mod receipts;
pub mod register;
pub mod relations;
pub mod reports;
pub mod room_directory;
pub mod room_events;
pub mod rooms;
pub mod search;
pub mod sync;
pub mod threepids;
pub mod upgrade;
