//! The HTTP APIs: one closed [`Endpoint`] enum, one route table, one dispatch.
//!
//! Each endpoint is implemented in the file of its spec area under
//! [`client`] (client-server API) or in [`server_keys`] (server-server key
//! publication). Handlers receive the shared [`Services`], the [`Request`] and,
//! for endpoints that need it, the authenticated [`Identity`]; they never see
//! hyper types.
//!
//! Invariant: authentication is decided here, by [`Endpoint::needs_auth`], not
//! left to each handler.

pub mod client;
pub mod server_keys;

use std::sync::Arc;

use crate::{
    error::{Error, ErrorKind, Result},
    http::{request::Method, router::Route, Request, Response},
    services::Services,
    users::Identity,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Versions,
    WellKnownClient,
    WellKnownServer,
    Capabilities,
    RegisterAvailable,
    Register,
    RegistrationTokenValidity,
    LoginFlows,
    Login,
    Refresh,
    Logout,
    LogoutAll,
    Whoami,
    ChangePassword,
    Deactivate,
    ThreePids,
    Devices,
    GetDevice,
    UpdateDevice,
    DeleteDevice,
    DeleteDevices,
    CreateRoom,
    JoinedRooms,
    JoinRoom,
    Invite,
    Leave,
    SendEvent,
    PutState,
    GetState,
    GetStateEvent,
    GetEvent,
    Messages,
    Members,
    JoinedMembers,
    Redact,
    Kick,
    Ban,
    Unban,
    CreateAlias,
    ResolveAlias,
    DeleteAlias,
    RoomAliases,
    Knock,
    Forget,
    TimestampToEvent,
    Context,
    ReportEvent,
    ReportRoom,
    ReportUser,
    Upgrade,
    Relations,
    Threads,
    AdminReports,
    Sync,
    CreateFilter,
    GetFilter,
    PutAccountData,
    GetAccountData,
    PutRoomAccountData,
    GetRoomAccountData,
    GetTags,
    PutTag,
    DeleteTag,
    GetProfile,
    GetProfileField,
    SetProfileField,
    Typing,
    Receipt,
    ReadMarkers,
    GetPresence,
    SetPresence,
    ServerKeys,
    KeysUpload,
    KeysQuery,
    KeysClaim,
    KeysChanges,
    SigningKeysUpload,
    SignaturesUpload,
    SendToDevice,
    CreateBackup,
    GetBackup,
    UpdateBackup,
    DeleteBackup,
    PutBackupKeys,
    GetBackupKeys,
    DeleteBackupKeys,
    GetPushRules,
    GetGlobalPushRules,
    GetPushRule,
    PutPushRule,
    DeletePushRule,
    GetPushRuleAttribute,
    PutPushRuleAttribute,
    PutDehydratedDevice,
    GetDehydratedDevice,
    DeleteDehydratedDevice,
    DehydratedDeviceEvents,
    UserDirectorySearch,
    GetPublicRooms,
    SearchPublicRooms,
    GetRoomVisibility,
    SetRoomVisibility,
    MediaUpload,
    MediaCreate,
    MediaUploadTo,
    MediaDownload,
    MediaLegacyDownload,
    MediaConfig,
    MediaThumbnail,
    MediaLegacyThumbnail,
    PreviewUrl,
    Hierarchy,
    RoomSummary,
    Notifications,
    Search,
    GetPushers,
    SetPusher,
}

impl Endpoint {
    /// Whether the handler reads the body as it arrives (media uploads,
    /// bounded by `media.max_upload_size`) instead of whole beforehand
    /// (bounded by `max_request_size`).
    pub fn streams_body(self) -> bool {
        matches!(self, Endpoint::MediaUpload | Endpoint::MediaUploadTo)
    }

    /// The largest body this endpoint reads whole, given the configured
    /// `max_request_size`: endpoints anyone may call without an account
    /// (login, registration, refresh) take small bodies, so an anonymous
    /// client cannot make the server read and parse megabytes.
    pub fn max_body(self, configured: u64) -> u64 {
        if self.needs_auth() {
            configured
        } else {
            configured.min(UNAUTHENTICATED_MAX_BODY)
        }
    }

    /// Whether the request must carry a valid access token.
    pub fn needs_auth(self) -> bool {
        use Endpoint::*;
        !matches!(
            self,
            Versions
                | WellKnownClient
                | WellKnownServer
                | RegisterAvailable
                | Register
                | RegistrationTokenValidity
                | LoginFlows
                | Login
                | Refresh
                | ServerKeys
                | ResolveAlias
                | GetProfile
                | GetProfileField
                | GetPublicRooms
                | GetRoomVisibility
                | MediaLegacyDownload
                | MediaLegacyThumbnail
        )
    }
}

impl Endpoint {
    /// Whether guest accounts may call it (spec: "Guest Access"; logout and
    /// capabilities are allowed too, as other servers do).
    pub fn allows_guests(self) -> bool {
        use Endpoint::*;
        matches!(
            self,
            Whoami
                | Devices
                | GetDevice
                | UpdateDevice
                | Logout
                | Capabilities
                | JoinRoom
                | Leave
                | SendEvent
                | PutState
                | GetState
                | GetStateEvent
                | GetEvent
                | Messages
                | Members
                | JoinedMembers
                | Context
                | Sync
                | CreateFilter
                | GetFilter
                | MediaDownload
                | MediaThumbnail
        )
    }
}

/// Body limit of the endpoints that need no access token (a registration
/// with every optional field is under 2 KiB).
pub const UNAUTHENTICATED_MAX_BODY: u64 = 64 * 1024;

const fn route(method: Method, pattern: &'static str, endpoint: Endpoint) -> Route<Endpoint> {
    Route { method, pattern, endpoint }
}

use Endpoint as E;
use Method::{Delete, Get, Post, Put};

/// Every route. Client-server paths answer under both `r0` and `v3` (older
/// clients and bridges still use `r0`).
pub const ROUTES: &[Route<Endpoint>] = &[
    route(Get, "/_matrix/client/versions", E::Versions),
    route(Get, "/.well-known/matrix/client", E::WellKnownClient),
    route(Get, "/.well-known/matrix/server", E::WellKnownServer),
    route(Get, "/_matrix/client/{r0|v3}/capabilities", E::Capabilities),
    route(Get, "/_matrix/client/{r0|v3}/register/available", E::RegisterAvailable),
    route(Post, "/_matrix/client/{r0|v3}/register", E::Register),
    route(Get, "/_matrix/client/v1/register/m.login.registration_token/validity", E::RegistrationTokenValidity),
    route(Get, "/_matrix/client/{r0|v3}/login", E::LoginFlows),
    route(Post, "/_matrix/client/{r0|v3}/login", E::Login),
    route(Post, "/_matrix/client/{v1|v3}/refresh", E::Refresh),
    route(Post, "/_matrix/client/{r0|v3}/logout", E::Logout),
    route(Post, "/_matrix/client/{r0|v3}/logout/all", E::LogoutAll),
    route(Get, "/_matrix/client/{r0|v3}/account/whoami", E::Whoami),
    route(Post, "/_matrix/client/{r0|v3}/account/password", E::ChangePassword),
    route(Post, "/_matrix/client/{r0|v3}/account/deactivate", E::Deactivate),
    route(Get, "/_matrix/client/{r0|v3}/account/3pid", E::ThreePids),
    route(Get, "/_matrix/client/{r0|v3}/devices", E::Devices),
    route(Get, "/_matrix/client/{r0|v3}/devices/:device_id", E::GetDevice),
    route(Put, "/_matrix/client/{r0|v3}/devices/:device_id", E::UpdateDevice),
    route(Delete, "/_matrix/client/{r0|v3}/devices/:device_id", E::DeleteDevice),
    route(Post, "/_matrix/client/{r0|v3}/delete_devices", E::DeleteDevices),
    route(Post, "/_matrix/client/{r0|v3}/createRoom", E::CreateRoom),
    route(Get, "/_matrix/client/{r0|v3}/joined_rooms", E::JoinedRooms),
    route(Post, "/_matrix/client/{r0|v3}/join/:room_id_or_alias", E::JoinRoom),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/join", E::JoinRoom),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/invite", E::Invite),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/leave", E::Leave),
    route(Put, "/_matrix/client/{r0|v3}/rooms/:room_id/send/:event_type/:txn_id", E::SendEvent),
    route(Put, "/_matrix/client/{r0|v3}/rooms/:room_id/state/:event_type", E::PutState),
    route(Put, "/_matrix/client/{r0|v3}/rooms/:room_id/state/:event_type/:state_key?", E::PutState),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/state", E::GetState),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/state/:event_type", E::GetStateEvent),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/state/:event_type/:state_key?", E::GetStateEvent),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/event/:event_id", E::GetEvent),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/messages", E::Messages),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/members", E::Members),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/joined_members", E::JoinedMembers),
    route(Put, "/_matrix/client/{r0|v3}/rooms/:room_id/redact/:event_id/:txn_id", E::Redact),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/kick", E::Kick),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/ban", E::Ban),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/unban", E::Unban),
    route(Put, "/_matrix/client/{r0|v3}/directory/room/:room_alias", E::CreateAlias),
    route(Get, "/_matrix/client/{r0|v3}/directory/room/:room_alias", E::ResolveAlias),
    route(Delete, "/_matrix/client/{r0|v3}/directory/room/:room_alias", E::DeleteAlias),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/aliases", E::RoomAliases),
    route(Post, "/_matrix/client/{r0|v3}/knock/:room_id_or_alias", E::Knock),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/forget", E::Forget),
    route(Get, "/_matrix/client/v1/rooms/:room_id/timestamp_to_event", E::TimestampToEvent),
    route(Get, "/_matrix/client/{r0|v3}/rooms/:room_id/context/:event_id", E::Context),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/report/:event_id", E::ReportEvent),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/report", E::ReportRoom),
    route(Post, "/_matrix/client/v3/users/:user_id/report", E::ReportUser),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/upgrade", E::Upgrade),
    route(Get, "/_matrix/client/v1/rooms/:room_id/relations/:event_id", E::Relations),
    route(Get, "/_matrix/client/v1/rooms/:room_id/relations/:event_id/:rel_type", E::Relations),
    route(Get, "/_matrix/client/v1/rooms/:room_id/relations/:event_id/:rel_type/:event_type", E::Relations),
    route(Get, "/_matrix/client/v1/rooms/:room_id/threads", E::Threads),
    route(Get, "/_conduit/admin/v1/reports", E::AdminReports),
    route(Get, "/_matrix/client/{r0|v3}/sync", E::Sync),
    route(Post, "/_matrix/client/{r0|v3}/user/:user_id/filter", E::CreateFilter),
    route(Get, "/_matrix/client/{r0|v3}/user/:user_id/filter/:filter_id", E::GetFilter),
    route(Put, "/_matrix/client/{r0|v3}/user/:user_id/account_data/:type", E::PutAccountData),
    route(Get, "/_matrix/client/{r0|v3}/user/:user_id/account_data/:type", E::GetAccountData),
    route(Put, "/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/account_data/:type", E::PutRoomAccountData),
    route(Get, "/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/account_data/:type", E::GetRoomAccountData),
    route(Get, "/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/tags", E::GetTags),
    route(Put, "/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/tags/:tag", E::PutTag),
    route(Delete, "/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/tags/:tag", E::DeleteTag),
    route(Get, "/_matrix/client/{r0|v3}/profile/:user_id", E::GetProfile),
    route(Get, "/_matrix/client/{r0|v3}/profile/:user_id/:field", E::GetProfileField),
    route(Put, "/_matrix/client/{r0|v3}/profile/:user_id/:field", E::SetProfileField),
    route(Put, "/_matrix/client/{r0|v3}/rooms/:room_id/typing/:user_id", E::Typing),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/receipt/:receipt_type/:event_id", E::Receipt),
    route(Post, "/_matrix/client/{r0|v3}/rooms/:room_id/read_markers", E::ReadMarkers),
    route(Get, "/_matrix/client/{r0|v3}/presence/:user_id/status", E::GetPresence),
    route(Put, "/_matrix/client/{r0|v3}/presence/:user_id/status", E::SetPresence),
    route(Post, "/_matrix/client/{r0|v3}/keys/upload", E::KeysUpload),
    route(Post, "/_matrix/client/{r0|v3}/keys/upload/:device_id", E::KeysUpload),
    route(Post, "/_matrix/client/{r0|v3}/keys/query", E::KeysQuery),
    route(Post, "/_matrix/client/{r0|v3}/keys/claim", E::KeysClaim),
    route(Get, "/_matrix/client/{r0|v3}/keys/changes", E::KeysChanges),
    route(Post, "/_matrix/client/{v3|unstable}/keys/device_signing/upload", E::SigningKeysUpload),
    route(Post, "/_matrix/client/{v3|unstable}/keys/signatures/upload", E::SignaturesUpload),
    route(Put, "/_matrix/client/{r0|v3}/sendToDevice/:event_type/:txn_id", E::SendToDevice),
    route(Post, "/_matrix/client/{r0|v3|unstable}/room_keys/version", E::CreateBackup),
    route(Get, "/_matrix/client/{r0|v3|unstable}/room_keys/version", E::GetBackup),
    route(Get, "/_matrix/client/{r0|v3|unstable}/room_keys/version/:version", E::GetBackup),
    route(Put, "/_matrix/client/{r0|v3|unstable}/room_keys/version/:version", E::UpdateBackup),
    route(Delete, "/_matrix/client/{r0|v3|unstable}/room_keys/version/:version", E::DeleteBackup),
    route(Put, "/_matrix/client/{r0|v3|unstable}/room_keys/keys", E::PutBackupKeys),
    route(Put, "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id", E::PutBackupKeys),
    route(Put, "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id/:session_id", E::PutBackupKeys),
    route(Get, "/_matrix/client/{r0|v3|unstable}/room_keys/keys", E::GetBackupKeys),
    route(Get, "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id", E::GetBackupKeys),
    route(Get, "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id/:session_id", E::GetBackupKeys),
    route(Delete, "/_matrix/client/{r0|v3|unstable}/room_keys/keys", E::DeleteBackupKeys),
    route(Delete, "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id", E::DeleteBackupKeys),
    route(Delete, "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id/:session_id", E::DeleteBackupKeys),
    route(Get, "/_matrix/client/{r0|v3}/pushrules/", E::GetPushRules),
    route(Get, "/_matrix/client/{r0|v3}/pushrules", E::GetPushRules),
    route(Get, "/_matrix/client/{r0|v3}/pushrules/global/", E::GetGlobalPushRules),
    route(Get, "/_matrix/client/{r0|v3}/pushrules/:scope/:kind/:rule_id", E::GetPushRule),
    route(Put, "/_matrix/client/{r0|v3}/pushrules/:scope/:kind/:rule_id", E::PutPushRule),
    route(Delete, "/_matrix/client/{r0|v3}/pushrules/:scope/:kind/:rule_id", E::DeletePushRule),
    route(Get, "/_matrix/client/{r0|v3}/pushrules/:scope/:kind/:rule_id/:attribute", E::GetPushRuleAttribute),
    route(Put, "/_matrix/client/{r0|v3}/pushrules/:scope/:kind/:rule_id/:attribute", E::PutPushRuleAttribute),
    route(Put, "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", E::PutDehydratedDevice),
    route(Get, "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", E::GetDehydratedDevice),
    route(Delete, "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", E::DeleteDehydratedDevice),
    route(
        Post,
        "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/:device_id/events",
        E::DehydratedDeviceEvents,
    ),
    route(Post, "/_matrix/client/{r0|v3}/user_directory/search", E::UserDirectorySearch),
    route(Get, "/_matrix/client/{r0|v3}/publicRooms", E::GetPublicRooms),
    route(Post, "/_matrix/client/{r0|v3}/publicRooms", E::SearchPublicRooms),
    route(Get, "/_matrix/client/{r0|v3}/directory/list/room/:room_id", E::GetRoomVisibility),
    route(Put, "/_matrix/client/{r0|v3}/directory/list/room/:room_id", E::SetRoomVisibility),
    route(Post, "/_matrix/media/{r0|v3}/upload", E::MediaUpload),
    route(Post, "/_matrix/media/v1/create", E::MediaCreate),
    route(Put, "/_matrix/media/{r0|v3}/upload/:server_name/:media_id", E::MediaUploadTo),
    route(Get, "/_matrix/client/v1/media/download/:server_name/:media_id", E::MediaDownload),
    route(Get, "/_matrix/client/v1/media/download/:server_name/:media_id/:file_name", E::MediaDownload),
    route(Get, "/_matrix/media/{r0|v3}/download/:server_name/:media_id", E::MediaLegacyDownload),
    route(Get, "/_matrix/media/{r0|v3}/download/:server_name/:media_id/:file_name", E::MediaLegacyDownload),
    route(Get, "/_matrix/client/v1/media/config", E::MediaConfig),
    route(Get, "/_matrix/client/v1/media/thumbnail/:server_name/:media_id", E::MediaThumbnail),
    route(Get, "/_matrix/media/{r0|v3}/thumbnail/:server_name/:media_id", E::MediaLegacyThumbnail),
    route(Get, "/_matrix/media/{r0|v3}/config", E::MediaConfig),
    route(Get, "/_matrix/client/v1/media/preview_url", E::PreviewUrl),
    route(Get, "/_matrix/media/{r0|v3}/preview_url", E::PreviewUrl),
    route(Get, "/_matrix/client/v1/rooms/:room_id/hierarchy", E::Hierarchy),
    route(Get, "/_matrix/client/v1/room_summary/:room_id_or_alias", E::RoomSummary),
    route(Get, "/_matrix/client/unstable/im.nheko.summary/summary/:room_id_or_alias", E::RoomSummary),
    route(Get, "/_matrix/client/{r0|v3}/notifications", E::Notifications),
    route(Post, "/_matrix/client/{r0|v3}/search", E::Search),
    route(Get, "/_matrix/client/{r0|v3}/pushers", E::GetPushers),
    route(Post, "/_matrix/client/{r0|v3}/pushers/set", E::SetPusher),
    route(Get, "/_matrix/key/v2/server", E::ServerKeys),
    route(Get, "/_matrix/key/v2/server/:key_id", E::ServerKeys),
];

/// Authenticates if the endpoint needs it, then runs its handler.
pub async fn dispatch(services: Arc<Services>, endpoint: Endpoint, request: Request) -> Result<Response> {
    let s = services.as_ref();
    let identity = if endpoint.needs_auth() { Some(authenticate(s, &request).await?) } else { None };
    if let Some(identity) = &identity {
        tracing::Span::current().record("user", identity.user_id.as_str());
        if identity.is_guest && !endpoint.allows_guests() {
            return Err(Error::new(ErrorKind::GuestAccessForbidden, "Guest accounts cannot use this endpoint"));
        }
        s.users.note_seen(identity, &request.client_ip);
    }
    let who = || identity.as_ref().ok_or_else(|| Error::internal("dispatch", "identity missing"));
    use client::{
        account, account_data, aliases, backup, devices, directory, discovery, keys, login, media, membership,
        messages, profile, push, receipts, register, relations, reports, room_directory, room_events, rooms, search,
        sync, upgrade,
    };
    match endpoint {
        E::Versions => Ok(discovery::versions()),
        E::WellKnownClient => discovery::well_known_client(s),
        E::WellKnownServer => discovery::well_known_server(s),
        E::Capabilities => discovery::capabilities(s),
        E::RegisterAvailable => register::available(s, &request),
        E::Register => register::register(s, &request).await,
        E::RegistrationTokenValidity => register::token_validity(s, &request),
        E::LoginFlows => Ok(login::flows()),
        E::Login => login::login(s, &request).await,
        E::Refresh => login::refresh(s, &request).await,
        E::Logout => login::logout(s, who()?).await,
        E::LogoutAll => login::logout_all(s, who()?).await,
        E::Whoami => Ok(account::whoami(who()?)),
        E::ChangePassword => account::change_password(s, &request, who()?).await,
        E::Deactivate => account::deactivate(s, &request, who()?).await,
        E::ThreePids => Ok(account::three_pids()),
        E::Devices => devices::list(s, who()?),
        E::GetDevice => devices::get(s, &request, who()?),
        E::UpdateDevice => devices::update(s, &request, who()?).await,
        E::DeleteDevice => devices::delete(s, &request, who()?).await,
        E::DeleteDevices => devices::delete_many(s, &request, who()?).await,
        E::CreateRoom => rooms::create_room(s, &request, who()?).await,
        E::JoinedRooms => rooms::joined_rooms(s, who()?),
        E::JoinRoom => membership::join(s, &request, who()?).await,
        E::Invite => membership::invite(s, &request, who()?).await,
        E::Leave => membership::leave(s, &request, who()?).await,
        E::SendEvent => room_events::send(s, &request, who()?).await,
        E::PutState => room_events::put_state(s, &request, who()?).await,
        E::GetState => room_events::get_state(s, &request, who()?),
        E::GetStateEvent => room_events::get_state_event(s, &request, who()?),
        E::GetEvent => room_events::get_event(s, &request, who()?),
        E::Messages => messages::messages(s, &request, who()?),
        E::Members => messages::members(s, &request, who()?),
        E::JoinedMembers => messages::joined_members(s, &request, who()?),
        E::Redact => room_events::redact(s, &request, who()?).await,
        E::Kick => membership::kick(s, &request, who()?).await,
        E::Ban => membership::ban(s, &request, who()?).await,
        E::Unban => membership::unban(s, &request, who()?).await,
        E::CreateAlias => aliases::create(s, &request, who()?).await,
        E::ResolveAlias => aliases::resolve(s, &request),
        E::DeleteAlias => aliases::delete(s, &request, who()?).await,
        E::RoomAliases => aliases::list(s, &request, who()?),
        E::Knock => membership::knock(s, &request, who()?).await,
        E::Forget => membership::forget(s, &request, who()?).await,
        E::TimestampToEvent => messages::timestamp_to_event(s, &request, who()?),
        E::Context => messages::context(s, &request, who()?),
        E::ReportEvent => reports::report_event(s, &request, who()?).await,
        E::ReportRoom => reports::report_room(s, &request, who()?).await,
        E::ReportUser => reports::report_user(s, &request, who()?).await,
        E::Upgrade => upgrade::upgrade(s, &request, who()?).await,
        E::Relations => relations::relations(s, &request, who()?),
        E::Threads => relations::threads(s, &request, who()?),
        E::AdminReports => reports::list_for_admins(s, who()?),
        E::Sync => sync::sync(s, &request, who()?).await,
        E::CreateFilter => sync::create_filter(s, &request, who()?).await,
        E::GetFilter => sync::get_filter(s, &request, who()?),
        E::PutAccountData => account_data::put_global(s, &request, who()?).await,
        E::GetAccountData => account_data::get_global(s, &request, who()?),
        E::PutRoomAccountData => account_data::put_room(s, &request, who()?).await,
        E::GetRoomAccountData => account_data::get_room(s, &request, who()?),
        E::GetTags => account_data::get_tags(s, &request, who()?),
        E::PutTag => account_data::put_tag(s, &request, who()?).await,
        E::DeleteTag => account_data::delete_tag(s, &request, who()?).await,
        E::GetProfile => profile::get_profile(s, &request),
        E::GetProfileField => profile::get_field(s, &request),
        E::SetProfileField => profile::set_field(s, &request, who()?).await,
        E::Typing => sync::typing(s, &request, who()?),
        E::Receipt => receipts::receipt(s, &request, who()?).await,
        E::ReadMarkers => receipts::read_markers(s, &request, who()?).await,
        E::GetPresence => sync::get_presence(s, &request, who()?),
        E::SetPresence => sync::set_presence(s, &request, who()?),
        E::ServerKeys => server_keys::server_keys(s),
        E::KeysUpload => keys::upload(s, &request, who()?).await,
        E::KeysQuery => keys::query(s, &request, who()?),
        E::KeysClaim => keys::claim(s, &request).await,
        E::KeysChanges => keys::changes(s, &request, who()?),
        E::SigningKeysUpload => keys::upload_signing_keys(s, &request, who()?).await,
        E::SignaturesUpload => keys::upload_signatures(s, &request, who()?).await,
        E::SendToDevice => keys::send_to_device(s, &request, who()?).await,
        E::CreateBackup => backup::create_version(s, &request, who()?).await,
        E::GetBackup => backup::get_version(s, &request, who()?),
        E::UpdateBackup => backup::update_version(s, &request, who()?).await,
        E::DeleteBackup => backup::delete_version(s, &request, who()?).await,
        E::PutBackupKeys => backup::put_keys(s, &request, who()?).await,
        E::GetBackupKeys => backup::get_keys(s, &request, who()?),
        E::DeleteBackupKeys => backup::delete_keys(s, &request, who()?).await,
        E::GetPushRules => push::all(s, who()?),
        E::GetGlobalPushRules => push::global(s, who()?),
        E::GetPushRule => push::get_rule(s, &request, who()?),
        E::PutPushRule => push::put_rule(s, &request, who()?).await,
        E::DeletePushRule => push::delete_rule(s, &request, who()?).await,
        E::GetPushRuleAttribute => push::get_attribute(s, &request, who()?),
        E::PutPushRuleAttribute => push::put_attribute(s, &request, who()?).await,
        E::PutDehydratedDevice => keys::put_dehydrated_device(s, &request, who()?).await,
        E::GetDehydratedDevice => keys::get_dehydrated_device(s, who()?),
        E::DeleteDehydratedDevice => keys::delete_dehydrated_device(s, who()?).await,
        E::DehydratedDeviceEvents => keys::dehydrated_device_events(s, &request, who()?),
        E::UserDirectorySearch => directory::search(s, &request, who()?),
        E::GetPublicRooms => room_directory::get_public_rooms(s, &request),
        E::SearchPublicRooms => room_directory::search_public_rooms(s, &request),
        E::GetRoomVisibility => room_directory::get_visibility(s, &request),
        E::SetRoomVisibility => room_directory::set_visibility(s, &request, who()?).await,
        E::MediaUpload => media::upload(s, &request, who()?).await,
        E::MediaCreate => media::create(s, who()?).await,
        E::MediaUploadTo => media::upload_to(s, &request, who()?).await,
        E::MediaDownload => media::download(s, &request).await,
        E::MediaLegacyDownload => media::legacy_download(s, &request).await,
        E::MediaConfig => Ok(media::config(s)),
        E::MediaThumbnail => media::thumbnail(s, &request).await,
        E::MediaLegacyThumbnail => media::legacy_thumbnail(s, &request).await,
        E::PreviewUrl => media::preview_url(s, &request, who()?).await,
        E::Hierarchy => room_directory::hierarchy(s, &request, who()?),
        E::RoomSummary => room_directory::room_summary(s, &request, who()?),
        E::Notifications => push::notifications(s, &request, who()?),
        E::Search => search::search(s, &request, who()?),
        E::GetPushers => push::pushers(s, who()?),
        E::SetPusher => push::set_pusher(s, &request, who()?).await,
    }
}

async fn authenticate(services: &Services, request: &Request) -> Result<Identity> {
    let token =
        request.access_token.as_deref().ok_or_else(|| Error::new(ErrorKind::MissingToken, "Missing access token"))?;
    services.users.authenticate(token).await
}
