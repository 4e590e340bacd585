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

pub mod admin;
pub mod client;
pub mod federation;
pub mod identity;
pub mod server_keys;

use std::sync::Arc;

use crate::{
    error::{Error, ErrorKind, Result},
    http::{request::Method, router::Route, Request, Response},
    services::Services,
    users::Identity,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    AddThreePid,
    DeleteThreePid,
    RequestRegistrationEmailToken,
    RequestAddEmailToken,
    RequestPasswordResetEmailToken,
    SubmitEmailToken,
    FollowEmailLink,
    PasswordPolicy,
    OpenIdRequestToken,
    OpenIdUserInfo,
    IdentityStatus,
    IdentityTerms,
    IdentityAcceptTerms,
    IdentityRegister,
    IdentityAccount,
    IdentityLogout,
    HashDetails,
    Lookup,
    EmailServerInfo,
    RenewAccount,
    StoreInvite,
    PublicKeyIsValid,
    PublicKey,
    InternalInfo,
    ExchangeThirdPartyInvite,
    Health,
    AdminServerVersion,
    AdminBackup,
    AdminRegisterNonce,
    AdminRegister,
    AdminListUsers,
    AdminGetUser,
    AdminPutUser,
    AdminDeactivate,
    AdminResetPassword,
    AdminWhois,
    Whois,
    AdminUserDevices,
    AdminDeleteDevice,
    AdminLoginAs,
    AdminJoinedRooms,
    AdminListRooms,
    AdminRoomDetails,
    AdminRoomMembers,
    AdminRoomState,
    AdminMakeRoomAdmin,
    AdminDeleteRoom,
    AdminRoomDeleteStatus,
    AdminDeleteStatus,
    AdminEventReports,
    AdminEventReport,
    AdminDeleteEventReport,
    AdminServerNotice,
    AdminUserMedia,
    AdminDeleteMedia,
    AdminQuarantineMedia,
    AdminUnquarantineMedia,
    AdminQuarantineRoomMedia,
    AdminQuarantineUserMedia,
    AdminPurgeMediaCache,
    AdminPurgeHistory,
    AdminPurgeHistoryStatus,
    AdminJobs,
    AdminStorage,
    AdminBackgroundUpdates,
    RenewalMail,
    AdminSetValidity,
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
    GetEventWithoutRoom,
    RoomInitialSync,
    InitialSync,
    EventStream,
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
    FederationVersion,
    QueryKeys,
    QueryServerKeys,
    QueryProfile,
    QueryDirectory,
    SendTransaction,
    FederationEvent,
    EventAuth,
    StateIds,
    RoomState,
    GetMissingEvents,
    Backfill,
    MakeJoin,
    SendJoinV1,
    SendJoin,
    MakeLeave,
    SendLeaveV1,
    SendLeave,
    InviteV2,
    FederationTimestampToEvent,
    MakeKnock,
    SendKnock,
    UserKeysQuery,
    UserKeysClaim,
    UserDevices,
    FederationPublicRooms,
    FederationSearchPublicRooms,
    FederationMediaDownload,
    FederationMediaThumbnail,
    FederationHierarchy,
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
    GetPushRulesOfKind,
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

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No access token needed.
    Anyone,
    /// A user's access token when one is given (the request is then that
    /// user's), else none (a password reset by email).
    AnyoneOrUser,
    /// A user's access token.
    Users,
    /// A user's or a guest's access token (spec: "Guest Access"; logout and
    /// capabilities are allowed too, as other servers do).
    UsersAndGuests,
    /// Another server's signed request (`X-Matrix`).
    Servers,
    /// The identity service API's users: an identity service token, or a
    /// user's access token of this server.
    IdentityUsers,
    /// A server admin's access token (the admin API).
    Admins,
}

/// How an endpoint gets its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Read whole before the handler runs, within `max_request_size` (or
    /// [`UNAUTHENTICATED_MAX_BODY`] for endpoints anyone may call).
    Whole,
    /// Handed to the handler as it arrives (media uploads, bounded by
    /// `media.max_upload_size`).
    Streamed,
}

/// Everything about one endpoint but its handler: method, paths (with named
/// parameters `:name`, `:name?` for one that may be empty, and `{a|b}` for
/// alternative literals), who may call it, how its body is read.
#[derive(Debug)]
pub struct EndpointSpec {
    pub endpoint: Endpoint,
    pub method: Method,
    pub paths: &'static [&'static str],
    pub access: Access,
    pub body: BodyKind,
}

const fn spec(endpoint: Endpoint, method: Method, access: Access, paths: &'static [&'static str]) -> EndpointSpec {
    EndpointSpec { endpoint, method, paths, access, body: BodyKind::Whole }
}
const fn get(endpoint: Endpoint, access: Access, paths: &'static [&'static str]) -> EndpointSpec {
    spec(endpoint, Method::Get, access, paths)
}
const fn post(endpoint: Endpoint, access: Access, paths: &'static [&'static str]) -> EndpointSpec {
    spec(endpoint, Method::Post, access, paths)
}
const fn put(endpoint: Endpoint, access: Access, paths: &'static [&'static str]) -> EndpointSpec {
    spec(endpoint, Method::Put, access, paths)
}
const fn delete(endpoint: Endpoint, access: Access, paths: &'static [&'static str]) -> EndpointSpec {
    spec(endpoint, Method::Delete, access, paths)
}

impl EndpointSpec {
    const fn streamed(self) -> Self {
        Self { body: BodyKind::Streamed, ..self }
    }
}

use crate::rooms::Membership;
use Access::{Admins, Anyone, AnyoneOrUser, IdentityUsers, Servers, Users, UsersAndGuests};
use Endpoint as E;

/// Body limit of the endpoints that need no access token (a registration
/// with every optional field is under 2 KiB).
pub const UNAUTHENTICATED_MAX_BODY: u64 = 64 * 1024;

/// Every endpoint, once. Client-server paths answer under both `r0` and `v3`
/// (older clients and bridges still use `r0`).
pub static ENDPOINTS: &[EndpointSpec] = &[
    get(E::Versions, Anyone, &["/_matrix/client/versions"]),
    get(E::WellKnownClient, Anyone, &["/.well-known/matrix/client"]),
    get(E::WellKnownServer, Anyone, &["/.well-known/matrix/server"]),
    get(E::Capabilities, UsersAndGuests, &["/_matrix/client/{r0|v3}/capabilities"]),
    get(E::RegisterAvailable, Anyone, &["/_matrix/client/{r0|v3}/register/available"]),
    post(E::Register, Anyone, &["/_matrix/client/{r0|v3}/register"]),
    get(E::RegistrationTokenValidity, Anyone, &["/_matrix/client/v1/register/m.login.registration_token/validity"]),
    get(E::LoginFlows, Anyone, &["/_matrix/client/{r0|v3}/login"]),
    post(E::Login, Anyone, &["/_matrix/client/{r0|v3}/login"]),
    post(E::Refresh, Anyone, &["/_matrix/client/{v1|v3}/refresh"]),
    post(E::Logout, UsersAndGuests, &["/_matrix/client/{r0|v3}/logout"]),
    post(E::LogoutAll, Users, &["/_matrix/client/{r0|v3}/logout/all"]),
    get(E::Whoami, UsersAndGuests, &["/_matrix/client/{r0|v3}/account/whoami"]),
    post(E::ChangePassword, AnyoneOrUser, &["/_matrix/client/{r0|v3}/account/password"]),
    post(E::Deactivate, Users, &["/_matrix/client/{r0|v3}/account/deactivate"]),
    get(E::ThreePids, Users, &["/_matrix/client/{r0|v3}/account/3pid"]),
    post(E::AddThreePid, Users, &["/_matrix/client/{r0|v3}/account/3pid/add"]),
    post(E::DeleteThreePid, Users, &["/_matrix/client/{r0|v3}/account/3pid/delete"]),
    post(E::RequestRegistrationEmailToken, Anyone, &["/_matrix/client/{r0|v3}/register/email/requestToken"]),
    post(E::RequestAddEmailToken, Anyone, &["/_matrix/client/{r0|v3}/account/3pid/email/requestToken"]),
    post(E::RequestPasswordResetEmailToken, Anyone, &["/_matrix/client/{r0|v3}/account/password/email/requestToken"]),
    post(E::SubmitEmailToken, Anyone, &["/_matrix/identity/v2/validate/email/submitToken"]),
    get(E::FollowEmailLink, Anyone, &["/_matrix/identity/v2/validate/email/submitToken"]),
    get(E::PasswordPolicy, Anyone, &["/_matrix/client/{r0|v3}/password_policy"]),
    post(E::OpenIdRequestToken, Users, &["/_matrix/client/{r0|v3}/user/:user_id/openid/request_token"]),
    get(E::OpenIdUserInfo, Anyone, &["/_matrix/federation/v1/openid/userinfo"]),
    get(E::IdentityStatus, Anyone, &["/_matrix/identity/v2"]),
    get(E::IdentityTerms, Anyone, &["/_matrix/identity/v2/terms"]),
    post(E::IdentityAcceptTerms, IdentityUsers, &["/_matrix/identity/v2/terms"]),
    post(E::IdentityRegister, Anyone, &["/_matrix/identity/v2/account/register"]),
    get(E::IdentityAccount, IdentityUsers, &["/_matrix/identity/v2/account"]),
    post(E::IdentityLogout, IdentityUsers, &["/_matrix/identity/v2/account/logout"]),
    get(E::HashDetails, IdentityUsers, &["/_matrix/identity/v2/hash_details"]),
    post(E::Lookup, IdentityUsers, &["/_matrix/identity/v2/lookup"]),
    get(E::EmailServerInfo, Anyone, &["/_matrix/identity/api/v1/info"]),
    get(E::RenewAccount, Anyone, &["/_matrix/client/unstable/account_validity/renew"]),
    post(E::StoreInvite, IdentityUsers, &["/_matrix/identity/v2/store-invite"]),
    get(E::PublicKeyIsValid, Anyone, &["/_matrix/identity/v2/pubkey/isvalid"]),
    get(E::PublicKey, Anyone, &["/_matrix/identity/v2/pubkey/:key_id"]),
    get(E::InternalInfo, Anyone, &["/_matrix/identity/api/v1/internal-info"]),
    put(E::ExchangeThirdPartyInvite, Servers, &["/_matrix/federation/v1/exchange_third_party_invite/:room_id"]),
    get(E::Health, Anyone, &["/_conduit/health"]),
    get(E::AdminServerVersion, Anyone, &["/_synapse/admin/v1/server_version"]),
    get(E::AdminRegisterNonce, Anyone, &["/_synapse/admin/v1/register"]),
    post(E::AdminRegister, Anyone, &["/_synapse/admin/v1/register"]),
    get(E::AdminBackup, Admins, &["/_conduit/admin/v1/backup"]),
    get(E::AdminListUsers, Admins, &["/_synapse/admin/v2/users"]),
    get(E::AdminGetUser, Admins, &["/_synapse/admin/v2/users/:user_id"]),
    put(E::AdminPutUser, Admins, &["/_synapse/admin/v2/users/:user_id"]),
    post(E::AdminDeactivate, Admins, &["/_synapse/admin/v1/deactivate/:user_id"]),
    post(E::AdminResetPassword, Admins, &["/_synapse/admin/v1/reset_password/:user_id"]),
    get(E::AdminWhois, Admins, &["/_synapse/admin/v1/whois/:user_id"]),
    get(E::Whois, Users, &["/_matrix/client/{r0|v3}/admin/whois/:user_id"]),
    get(E::AdminUserDevices, Admins, &["/_synapse/admin/v2/users/:user_id/devices"]),
    delete(E::AdminDeleteDevice, Admins, &["/_synapse/admin/v2/users/:user_id/devices/:device_id"]),
    post(E::AdminLoginAs, Admins, &["/_synapse/admin/v1/users/:user_id/login"]),
    get(E::AdminJoinedRooms, Admins, &["/_synapse/admin/v1/users/:user_id/joined_rooms"]),
    get(E::AdminListRooms, Admins, &["/_synapse/admin/v1/rooms"]),
    get(E::AdminDeleteStatus, Admins, &["/_synapse/admin/v2/rooms/delete_status/:delete_id"]),
    get(E::AdminRoomDetails, Admins, &["/_synapse/admin/v1/rooms/:room_id"]),
    get(E::AdminRoomMembers, Admins, &["/_synapse/admin/v1/rooms/:room_id/members"]),
    get(E::AdminRoomState, Admins, &["/_synapse/admin/v1/rooms/:room_id/state"]),
    post(E::AdminMakeRoomAdmin, Admins, &["/_synapse/admin/v1/rooms/:room_id/make_room_admin"]),
    delete(E::AdminDeleteRoom, Admins, &["/_synapse/admin/v2/rooms/:room_id"]),
    get(E::AdminRoomDeleteStatus, Admins, &["/_synapse/admin/v2/rooms/:room_id/delete_status"]),
    get(E::AdminEventReports, Admins, &["/_synapse/admin/v1/event_reports"]),
    get(E::AdminEventReport, Admins, &["/_synapse/admin/v1/event_reports/:report_id"]),
    delete(E::AdminDeleteEventReport, Admins, &["/_synapse/admin/v1/event_reports/:report_id"]),
    post(E::AdminServerNotice, Admins, &["/_synapse/admin/v1/send_server_notice"]),
    get(E::AdminUserMedia, Admins, &["/_synapse/admin/v1/users/:user_id/media"]),
    delete(E::AdminDeleteMedia, Admins, &["/_synapse/admin/v1/media/:server_name/:media_id"]),
    post(E::AdminQuarantineMedia, Admins, &["/_synapse/admin/v1/media/quarantine/:server_name/:media_id"]),
    post(E::AdminUnquarantineMedia, Admins, &["/_synapse/admin/v1/media/unquarantine/:server_name/:media_id"]),
    post(
        E::AdminQuarantineRoomMedia,
        Admins,
        &["/_synapse/admin/v1/room/:room_id/media/quarantine", "/_synapse/admin/v1/quarantine_media/:room_id"],
    ),
    post(E::AdminQuarantineUserMedia, Admins, &["/_synapse/admin/v1/user/:user_id/media/quarantine"]),
    post(E::AdminPurgeMediaCache, Admins, &["/_synapse/admin/v1/purge_media_cache"]),
    post(
        E::AdminPurgeHistory,
        Admins,
        &["/_synapse/admin/v1/purge_history/:room_id", "/_synapse/admin/v1/purge_history/:room_id/:event_id"],
    ),
    get(E::AdminPurgeHistoryStatus, Admins, &["/_synapse/admin/v1/purge_history_status/:purge_id"]),
    get(E::AdminJobs, Admins, &["/_conduit/admin/v1/jobs"]),
    get(E::AdminStorage, Admins, &["/_conduit/admin/v1/storage"]),
    get(E::AdminBackgroundUpdates, Admins, &["/_synapse/admin/v1/background_updates/status"]),
    post(E::RenewalMail, Users, &["/_matrix/client/unstable/account_validity/send_mail"]),
    post(E::AdminSetValidity, Users, &["/_synapse/admin/v1/account_validity/validity"]),
    get(E::Devices, UsersAndGuests, &["/_matrix/client/{r0|v3}/devices"]),
    get(E::GetDevice, UsersAndGuests, &["/_matrix/client/{r0|v3}/devices/:device_id"]),
    put(E::UpdateDevice, UsersAndGuests, &["/_matrix/client/{r0|v3}/devices/:device_id"]),
    delete(E::DeleteDevice, Users, &["/_matrix/client/{r0|v3}/devices/:device_id"]),
    post(E::DeleteDevices, Users, &["/_matrix/client/{r0|v3}/delete_devices"]),
    post(E::CreateRoom, Users, &["/_matrix/client/{r0|v3}/createRoom"]),
    get(E::JoinedRooms, Users, &["/_matrix/client/{r0|v3}/joined_rooms"]),
    post(
        E::JoinRoom,
        UsersAndGuests,
        &["/_matrix/client/{r0|v3}/join/:room_id_or_alias", "/_matrix/client/{r0|v3}/rooms/:room_id_or_alias/join"],
    ),
    post(E::Invite, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/invite"]),
    post(E::Leave, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/leave"]),
    put(E::SendEvent, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/send/:event_type/:txn_id"]),
    put(
        E::PutState,
        UsersAndGuests,
        &[
            "/_matrix/client/{r0|v3}/rooms/:room_id/state/:event_type",
            "/_matrix/client/{r0|v3}/rooms/:room_id/state/:event_type/:state_key?",
        ],
    ),
    get(E::GetState, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/state"]),
    get(
        E::GetStateEvent,
        UsersAndGuests,
        &[
            "/_matrix/client/{r0|v3}/rooms/:room_id/state/:event_type",
            "/_matrix/client/{r0|v3}/rooms/:room_id/state/:event_type/:state_key?",
        ],
    ),
    get(E::GetEvent, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/event/:event_id"]),
    // Deprecated since r0, still used by older clients and test tools.
    get(E::GetEventWithoutRoom, UsersAndGuests, &["/_matrix/client/{r0|v3}/events/:event_id"]),
    get(E::RoomInitialSync, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/initialSync"]),
    get(E::InitialSync, UsersAndGuests, &["/_matrix/client/{r0|v3}/initialSync"]),
    get(E::EventStream, UsersAndGuests, &["/_matrix/client/{r0|v3}/events"]),
    get(E::Messages, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/messages"]),
    get(E::Members, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/members"]),
    get(E::JoinedMembers, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/joined_members"]),
    put(E::Redact, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/redact/:event_id/:txn_id"]),
    post(E::Kick, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/kick"]),
    post(E::Ban, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/ban"]),
    post(E::Unban, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/unban"]),
    put(E::CreateAlias, Users, &["/_matrix/client/{r0|v3}/directory/room/:room_alias"]),
    get(E::ResolveAlias, Anyone, &["/_matrix/client/{r0|v3}/directory/room/:room_alias"]),
    delete(E::DeleteAlias, Users, &["/_matrix/client/{r0|v3}/directory/room/:room_alias"]),
    get(E::RoomAliases, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/aliases"]),
    post(E::Knock, Users, &["/_matrix/client/{r0|v3}/knock/:room_id_or_alias"]),
    post(E::Forget, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/forget"]),
    get(E::TimestampToEvent, Users, &["/_matrix/client/v1/rooms/:room_id/timestamp_to_event"]),
    get(E::Context, UsersAndGuests, &["/_matrix/client/{r0|v3}/rooms/:room_id/context/:event_id"]),
    post(E::ReportEvent, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/report/:event_id"]),
    post(E::ReportRoom, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/report"]),
    post(E::ReportUser, Users, &["/_matrix/client/v3/users/:user_id/report"]),
    post(E::Upgrade, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/upgrade"]),
    get(
        E::Relations,
        Users,
        &[
            "/_matrix/client/v1/rooms/:room_id/relations/:event_id",
            "/_matrix/client/v1/rooms/:room_id/relations/:event_id/:rel_type",
            "/_matrix/client/v1/rooms/:room_id/relations/:event_id/:rel_type/:event_type",
        ],
    ),
    get(E::Threads, Users, &["/_matrix/client/v1/rooms/:room_id/threads"]),
    get(E::AdminReports, Users, &["/_conduit/admin/v1/reports"]),
    get(E::Sync, UsersAndGuests, &["/_matrix/client/{r0|v3}/sync"]),
    post(E::CreateFilter, UsersAndGuests, &["/_matrix/client/{r0|v3}/user/:user_id/filter"]),
    get(E::GetFilter, UsersAndGuests, &["/_matrix/client/{r0|v3}/user/:user_id/filter/:filter_id"]),
    put(E::PutAccountData, Users, &["/_matrix/client/{r0|v3}/user/:user_id/account_data/:type"]),
    get(E::GetAccountData, Users, &["/_matrix/client/{r0|v3}/user/:user_id/account_data/:type"]),
    put(E::PutRoomAccountData, Users, &["/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/account_data/:type"]),
    get(E::GetRoomAccountData, Users, &["/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/account_data/:type"]),
    get(E::GetTags, Users, &["/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/tags"]),
    put(E::PutTag, Users, &["/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/tags/:tag"]),
    delete(E::DeleteTag, Users, &["/_matrix/client/{r0|v3}/user/:user_id/rooms/:room_id/tags/:tag"]),
    get(E::GetProfile, Anyone, &["/_matrix/client/{r0|v3}/profile/:user_id"]),
    get(E::GetProfileField, Anyone, &["/_matrix/client/{r0|v3}/profile/:user_id/:field"]),
    // Guests may set their display name (the spec's guest access list); the
    // handler refuses them every other field.
    put(E::SetProfileField, UsersAndGuests, &["/_matrix/client/{r0|v3}/profile/:user_id/:field"]),
    put(E::Typing, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/typing/:user_id"]),
    post(E::Receipt, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/receipt/:receipt_type/:event_id"]),
    post(E::ReadMarkers, Users, &["/_matrix/client/{r0|v3}/rooms/:room_id/read_markers"]),
    get(E::GetPresence, Users, &["/_matrix/client/{r0|v3}/presence/:user_id/status"]),
    put(E::SetPresence, Users, &["/_matrix/client/{r0|v3}/presence/:user_id/status"]),
    post(
        E::KeysUpload,
        Users,
        &["/_matrix/client/{r0|v3}/keys/upload", "/_matrix/client/{r0|v3}/keys/upload/:device_id"],
    ),
    post(E::KeysQuery, Users, &["/_matrix/client/{r0|v3}/keys/query"]),
    post(E::KeysClaim, Users, &["/_matrix/client/{r0|v3}/keys/claim"]),
    get(E::KeysChanges, Users, &["/_matrix/client/{r0|v3}/keys/changes"]),
    post(E::SigningKeysUpload, Users, &["/_matrix/client/{v3|unstable}/keys/device_signing/upload"]),
    post(E::SignaturesUpload, Users, &["/_matrix/client/{v3|unstable}/keys/signatures/upload"]),
    put(E::SendToDevice, Users, &["/_matrix/client/{r0|v3}/sendToDevice/:event_type/:txn_id"]),
    post(E::CreateBackup, Users, &["/_matrix/client/{r0|v3|unstable}/room_keys/version"]),
    get(
        E::GetBackup,
        Users,
        &[
            "/_matrix/client/{r0|v3|unstable}/room_keys/version",
            "/_matrix/client/{r0|v3|unstable}/room_keys/version/:version",
        ],
    ),
    put(E::UpdateBackup, Users, &["/_matrix/client/{r0|v3|unstable}/room_keys/version/:version"]),
    delete(E::DeleteBackup, Users, &["/_matrix/client/{r0|v3|unstable}/room_keys/version/:version"]),
    put(
        E::PutBackupKeys,
        Users,
        &[
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys",
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id",
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id/:session_id",
        ],
    ),
    get(
        E::GetBackupKeys,
        Users,
        &[
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys",
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id",
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id/:session_id",
        ],
    ),
    delete(
        E::DeleteBackupKeys,
        Users,
        &[
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys",
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id",
            "/_matrix/client/{r0|v3|unstable}/room_keys/keys/:room_id/:session_id",
        ],
    ),
    get(E::GetPushRules, Users, &["/_matrix/client/{r0|v3}/pushrules/", "/_matrix/client/{r0|v3}/pushrules"]),
    get(E::GetGlobalPushRules, Users, &["/_matrix/client/{r0|v3}/pushrules/global/"]),
    // Empty segments reach the handlers, which refuse them with a 400.
    get(E::GetPushRulesOfKind, Users, &["/_matrix/client/{r0|v3}/pushrules/:scope?/:kind?"]),
    get(E::GetPushRule, Users, &["/_matrix/client/{r0|v3}/pushrules/:scope?/:kind?/:rule_id?"]),
    // (Also on the path of a kind: no rule id is then a 400, not a 404.)
    put(
        E::PutPushRule,
        Users,
        &[
            "/_matrix/client/{r0|v3}/pushrules/:scope?/:kind?/:rule_id?",
            "/_matrix/client/{r0|v3}/pushrules/:scope?/:kind?",
        ],
    ),
    delete(
        E::DeletePushRule,
        Users,
        &[
            "/_matrix/client/{r0|v3}/pushrules/:scope?/:kind?/:rule_id?",
            "/_matrix/client/{r0|v3}/pushrules/:scope?/:kind?",
        ],
    ),
    get(E::GetPushRuleAttribute, Users, &["/_matrix/client/{r0|v3}/pushrules/:scope?/:kind?/:rule_id?/:attribute?"]),
    put(E::PutPushRuleAttribute, Users, &["/_matrix/client/{r0|v3}/pushrules/:scope?/:kind?/:rule_id?/:attribute?"]),
    put(E::PutDehydratedDevice, Users, &["/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"]),
    get(E::GetDehydratedDevice, Users, &["/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"]),
    delete(E::DeleteDehydratedDevice, Users, &["/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"]),
    post(
        E::DehydratedDeviceEvents,
        Users,
        &["/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/:device_id/events"],
    ),
    post(E::UserDirectorySearch, Users, &["/_matrix/client/{r0|v3}/user_directory/search"]),
    get(E::GetPublicRooms, Anyone, &["/_matrix/client/{r0|v3}/publicRooms"]),
    post(E::SearchPublicRooms, Users, &["/_matrix/client/{r0|v3}/publicRooms"]),
    get(E::GetRoomVisibility, Anyone, &["/_matrix/client/{r0|v3}/directory/list/room/:room_id"]),
    put(E::SetRoomVisibility, Users, &["/_matrix/client/{r0|v3}/directory/list/room/:room_id"]),
    post(E::MediaUpload, Users, &["/_matrix/media/{r0|v3}/upload"]).streamed(),
    post(E::MediaCreate, Users, &["/_matrix/media/v1/create"]),
    put(E::MediaUploadTo, Users, &["/_matrix/media/{r0|v3}/upload/:server_name/:media_id"]).streamed(),
    get(
        E::MediaDownload,
        UsersAndGuests,
        &[
            "/_matrix/client/v1/media/download/:server_name/:media_id",
            "/_matrix/client/v1/media/download/:server_name/:media_id/:file_name",
        ],
    ),
    get(
        E::MediaLegacyDownload,
        Anyone,
        &[
            "/_matrix/media/{r0|v3}/download/:server_name/:media_id",
            "/_matrix/media/{r0|v3}/download/:server_name/:media_id/:file_name",
        ],
    ),
    get(E::MediaConfig, Users, &["/_matrix/client/v1/media/config", "/_matrix/media/{r0|v3}/config"]),
    get(E::MediaThumbnail, UsersAndGuests, &["/_matrix/client/v1/media/thumbnail/:server_name/:media_id"]),
    get(E::MediaLegacyThumbnail, Anyone, &["/_matrix/media/{r0|v3}/thumbnail/:server_name/:media_id"]),
    get(E::PreviewUrl, Users, &["/_matrix/client/v1/media/preview_url", "/_matrix/media/{r0|v3}/preview_url"]),
    get(E::Hierarchy, Users, &["/_matrix/client/v1/rooms/:room_id/hierarchy"]),
    get(
        E::RoomSummary,
        Users,
        &[
            "/_matrix/client/v1/room_summary/:room_id_or_alias",
            "/_matrix/client/unstable/im.nheko.summary/summary/:room_id_or_alias",
        ],
    ),
    get(E::Notifications, Users, &["/_matrix/client/{r0|v3}/notifications"]),
    post(E::Search, Users, &["/_matrix/client/{r0|v3}/search"]),
    get(E::GetPushers, Users, &["/_matrix/client/{r0|v3}/pushers"]),
    post(E::SetPusher, Users, &["/_matrix/client/{r0|v3}/pushers/set"]),
    get(E::ServerKeys, Anyone, &["/_matrix/key/v2/server", "/_matrix/key/v2/server/:key_id"]),
    get(E::FederationVersion, Anyone, &["/_matrix/federation/v1/version"]),
    post(E::QueryKeys, Anyone, &["/_matrix/key/v2/query"]),
    get(
        E::QueryServerKeys,
        Anyone,
        &["/_matrix/key/v2/query/:server_name", "/_matrix/key/v2/query/:server_name/:key_id"],
    ),
    get(E::QueryProfile, Servers, &["/_matrix/federation/v1/query/profile"]),
    get(E::QueryDirectory, Servers, &["/_matrix/federation/v1/query/directory"]),
    put(E::SendTransaction, Servers, &["/_matrix/federation/v1/send/:txn_id"]),
    get(E::FederationEvent, Servers, &["/_matrix/federation/v1/event/:event_id"]),
    get(E::EventAuth, Servers, &["/_matrix/federation/v1/event_auth/:room_id/:event_id"]),
    get(E::StateIds, Servers, &["/_matrix/federation/v1/state_ids/:room_id"]),
    get(E::RoomState, Servers, &["/_matrix/federation/v1/state/:room_id"]),
    post(E::GetMissingEvents, Servers, &["/_matrix/federation/v1/get_missing_events/:room_id"]),
    get(E::Backfill, Servers, &["/_matrix/federation/v1/backfill/:room_id"]),
    get(E::MakeJoin, Servers, &["/_matrix/federation/v1/make_join/:room_id/:user_id"]),
    put(E::SendJoinV1, Servers, &["/_matrix/federation/v1/send_join/:room_id/:event_id"]),
    put(E::SendJoin, Servers, &["/_matrix/federation/v2/send_join/:room_id/:event_id"]),
    get(E::MakeLeave, Servers, &["/_matrix/federation/v1/make_leave/:room_id/:user_id"]),
    put(E::SendLeaveV1, Servers, &["/_matrix/federation/v1/send_leave/:room_id/:event_id"]),
    put(E::SendLeave, Servers, &["/_matrix/federation/v2/send_leave/:room_id/:event_id"]),
    put(E::InviteV2, Servers, &["/_matrix/federation/v2/invite/:room_id/:event_id"]),
    get(E::FederationTimestampToEvent, Servers, &["/_matrix/federation/v1/timestamp_to_event/:room_id"]),
    get(E::MakeKnock, Servers, &["/_matrix/federation/v1/make_knock/:room_id/:user_id"]),
    put(E::SendKnock, Servers, &["/_matrix/federation/v1/send_knock/:room_id/:event_id"]),
    post(E::UserKeysQuery, Servers, &["/_matrix/federation/v1/user/keys/query"]),
    post(E::UserKeysClaim, Servers, &["/_matrix/federation/v1/user/keys/claim"]),
    get(E::UserDevices, Servers, &["/_matrix/federation/v1/user/devices/:user_id"]),
    get(E::FederationPublicRooms, Servers, &["/_matrix/federation/v1/publicRooms"]),
    post(E::FederationSearchPublicRooms, Servers, &["/_matrix/federation/v1/publicRooms"]),
    get(E::FederationMediaDownload, Servers, &["/_matrix/federation/v1/media/download/:media_id"]),
    get(E::FederationMediaThumbnail, Servers, &["/_matrix/federation/v1/media/thumbnail/:media_id"]),
    get(E::FederationHierarchy, Servers, &["/_matrix/federation/v1/hierarchy/:room_id"]),
];

impl Endpoint {
    /// This endpoint's description.
    pub fn spec(self) -> &'static EndpointSpec {
        static BY_ENDPOINT: std::sync::LazyLock<std::collections::HashMap<Endpoint, &'static EndpointSpec>> =
            std::sync::LazyLock::new(|| ENDPOINTS.iter().map(|spec| (spec.endpoint, spec)).collect());
        BY_ENDPOINT.get(&self).copied().unwrap_or(&UNDESCRIBED)
    }

    /// Whether the handler reads the body as it arrives.
    pub fn streams_body(self) -> bool {
        self.spec().body == BodyKind::Streamed
    }

    /// The largest body this endpoint reads whole, given the configured
    /// `max_request_size`: endpoints anyone may call without an account
    /// (login, registration, refresh) take small bodies, so an anonymous
    /// client cannot make the server read and parse megabytes.
    pub fn max_body(self, configured: u64) -> u64 {
        if matches!(self.spec().access, Access::Anyone | Access::AnyoneOrUser) {
            configured.min(UNAUTHENTICATED_MAX_BODY)
        } else {
            configured
        }
    }

    /// Whether the request must carry a valid access token.
    pub fn needs_auth(self) -> bool {
        matches!(self.spec().access, Access::Users | Access::UsersAndGuests | Access::Admins)
    }

    /// Whether the request must be signed by another server.
    pub fn needs_server_auth(self) -> bool {
        self.spec().access == Access::Servers
    }

    /// Whether an account past its validity may call it (to log out, or
    /// to ask for a renewal mail).
    pub fn allowed_when_expired(self) -> bool {
        matches!(self, Endpoint::Logout | Endpoint::LogoutAll | Endpoint::RenewalMail)
    }

    /// Whether guest accounts may call it.
    pub fn allows_guests(self) -> bool {
        self.spec().access == Access::UsersAndGuests
    }
}

/// What an endpoint missing from [`ENDPOINTS`] would get (a unit test
/// checks that none is): the most restrictive description.
static UNDESCRIBED: EndpointSpec = EndpointSpec {
    endpoint: Endpoint::Versions,
    method: Method::Get,
    paths: &[],
    access: Access::Users,
    body: BodyKind::Whole,
};

/// The route table the router matches, built once from [`ENDPOINTS`].
pub fn routes() -> &'static [Route<Endpoint>] {
    static ROUTES: std::sync::LazyLock<Vec<Route<Endpoint>>> = std::sync::LazyLock::new(|| {
        ENDPOINTS
            .iter()
            .flat_map(|spec| {
                spec.paths.iter().map(|pattern| Route { method: spec.method, pattern, endpoint: spec.endpoint })
            })
            .collect()
    });
    &ROUTES
}

/// Authenticates if the endpoint needs it, then runs its handler.
pub async fn dispatch(services: Arc<Services>, endpoint: Endpoint, request: Request) -> Result<Response> {
    let s = services.as_ref();
    let token_given = endpoint.spec().access == Access::AnyoneOrUser && request.access_token.is_some();
    let identity =
        if endpoint.needs_auth() || token_given { Some(authenticate(s, &request, endpoint).await?) } else { None };
    if let Some(identity) = &identity {
        tracing::Span::current().record("user", identity.user_id.as_str());
        if identity.is_guest && !endpoint.allows_guests() {
            return Err(Error::new(ErrorKind::GuestAccessForbidden, "Guest accounts cannot use this endpoint"));
        }
        if endpoint.spec().access == Access::Admins && !identity.is_admin {
            return Err(Error::forbidden("You are not a server admin"));
        }
        if !endpoint.allowed_when_expired() {
            s.users.validity.check(&identity.localpart, identity.is_admin)?;
        }
        if !request.operator {
            s.users.note_seen(identity, &request.client_ip);
        }
    }
    let who = || identity.as_ref().ok_or_else(|| Error::internal("dispatch", "identity missing"));
    let server = if endpoint.needs_server_auth() { Some(authenticate_server(s, &request).await?) } else { None };
    let identity_user = if endpoint.spec().access == Access::IdentityUsers {
        Some(authenticate_identity_user(s, &request).await?)
    } else {
        None
    };
    let requester =
        Requester { user: identity.as_ref(), origin: server.as_deref(), identity_user: identity_user.as_deref() };
    apply_rate_limit(s, endpoint, &request, requester)?;
    let identity_user = || identity_user.as_deref().ok_or_else(|| Error::internal("dispatch", "identity user missing"));
    let origin = || server.as_deref().ok_or_else(|| Error::internal("dispatch", "origin missing"));
    use client::{
        account, account_data, account_validity, aliases, backup, devices, directory, discovery, keys, login, media,
        membership, messages, profile, push, receipts, register, relations, reports, room_directory, room_events,
        rooms, search, sync, third_party_invites, threepids, upgrade,
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
        E::ChangePassword => account::change_password(s, &request, identity.as_ref()).await,
        E::Deactivate => account::deactivate(s, &request, who()?).await,
        E::ThreePids => threepids::list(s, who()?),
        E::AddThreePid => threepids::add(s, &request, who()?).await,
        E::DeleteThreePid => threepids::delete(s, &request, who()?).await,
        E::RequestRegistrationEmailToken => threepids::request_registration_token(s, &request).await,
        E::RequestAddEmailToken => threepids::request_add_token(s, &request).await,
        E::RequestPasswordResetEmailToken => threepids::request_password_reset_token(s, &request).await,
        E::SubmitEmailToken => threepids::submit_token(s, &request).await,
        E::FollowEmailLink => threepids::follow_link(s, &request).await,
        E::PasswordPolicy => Ok(account::password_policy(s)),
        E::OpenIdRequestToken => account::openid_request_token(s, &request, who()?).await,
        E::OpenIdUserInfo => federation::openid_userinfo(s, &request),
        E::IdentityStatus => Ok(identity::status()),
        E::IdentityTerms => Ok(identity::terms()),
        E::IdentityAcceptTerms => identity_user().map(|_| Response::empty_object()),
        E::IdentityRegister => identity::register_account(s, &request).await,
        E::IdentityAccount => identity_user().map(identity::account),
        E::IdentityLogout => identity::logout(s, &request).await,
        E::HashDetails => identity::hash_details(s),
        E::Lookup => identity::lookup(s, &request),
        E::EmailServerInfo => Ok(identity::info(s, &request)),
        E::RenewAccount => account_validity::renew(s, &request).await,
        E::StoreInvite => identity::store_invite(s, &request, identity_user()?).await,
        E::PublicKeyIsValid => Ok(identity::key_is_valid(s, &request)),
        E::PublicKey => identity::public_key(s, &request),
        E::InternalInfo => identity::internal_info(s, &request),
        E::Health => admin::health(s),
        E::AdminServerVersion => Ok(admin::server_version()),
        E::AdminBackup => admin::backup::database(s).await,
        E::AdminRegisterNonce => admin::register::nonce(s),
        E::AdminRegister => admin::register::register(s, &request).await,
        E::AdminListUsers => admin::users::list(s, &request),
        E::AdminGetUser => admin::users::get(s, &request),
        E::AdminPutUser => admin::users::put(s, &request, who()?).await,
        E::AdminDeactivate => admin::users::deactivate(s, &request, who()?).await,
        E::AdminResetPassword => admin::users::reset_password(s, &request, who()?).await,
        E::AdminWhois | E::Whois => admin::users::whois(s, &request, who()?),
        E::AdminUserDevices => admin::users::devices(s, &request),
        E::AdminDeleteDevice => admin::users::delete_device(s, &request).await,
        E::AdminLoginAs => admin::users::login_as(s, &request, who()?).await,
        E::AdminJoinedRooms => admin::users::joined_rooms(s, &request),
        E::AdminListRooms => admin::rooms::list(s, &request),
        E::AdminRoomDetails => admin::rooms::details(s, &request),
        E::AdminRoomMembers => admin::rooms::members(s, &request),
        E::AdminRoomState => admin::rooms::state(s, &request),
        E::AdminMakeRoomAdmin => admin::rooms::make_room_admin(s, &request, who()?).await,
        E::AdminDeleteRoom => admin::rooms::delete(s, &request, who()?).await,
        E::AdminRoomDeleteStatus => admin::rooms::room_delete_status(s, &request),
        E::AdminDeleteStatus => admin::rooms::delete_status(s, &request),
        E::AdminEventReports => admin::reports::list(s, &request),
        E::AdminEventReport => admin::reports::get(s, &request),
        E::AdminDeleteEventReport => admin::reports::delete(s, &request).await,
        E::AdminServerNotice => admin::notices::send(s, &request, who()?).await,
        E::AdminUserMedia => admin::media::list(s, &request),
        E::AdminDeleteMedia => admin::media::delete(s, &request, who()?).await,
        E::AdminQuarantineMedia => admin::media::quarantine(s, &request, who()?, true).await,
        E::AdminUnquarantineMedia => admin::media::quarantine(s, &request, who()?, false).await,
        E::AdminQuarantineRoomMedia => admin::media::quarantine_room(s, &request, who()?).await,
        E::AdminQuarantineUserMedia => admin::media::quarantine_user(s, &request, who()?).await,
        E::AdminPurgeMediaCache => admin::media::purge_remote_cache(s, &request, who()?).await,
        E::AdminPurgeHistory => admin::rooms::purge_history(s, &request, who()?).await,
        E::AdminPurgeHistoryStatus => admin::rooms::purge_status(s, &request),
        E::AdminJobs => Ok(admin::operations::jobs(s)),
        E::AdminStorage => admin::operations::storage(s).await,
        E::AdminBackgroundUpdates => Ok(admin::operations::background_updates()),
        E::ExchangeThirdPartyInvite => {
            let room_id = client::room_events::room_id_param(&request)?;
            third_party_invites::exchange(s, &room_id, origin()?, &request.json_object()?).await?;
            Ok(Response::empty_object())
        }
        E::RenewalMail => account_validity::send_mail(s, who()?).await,
        E::AdminSetValidity => account_validity::admin_set_validity(s, &request, who()?).await,
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
        E::GetEventWithoutRoom => room_events::get_event_without_room(s, &request, who()?),
        E::RoomInitialSync => messages::room_initial_sync(s, &request, who()?),
        E::InitialSync => messages::initial_sync(s, &request, who()?),
        E::Messages => messages::messages(s, &request, who()?).await,
        E::Members => messages::members(s, &request, who()?).await,
        E::JoinedMembers => messages::joined_members(s, &request, who()?).await,
        E::Redact => room_events::redact(s, &request, who()?).await,
        E::Kick => membership::kick(s, &request, who()?).await,
        E::Ban => membership::ban(s, &request, who()?).await,
        E::Unban => membership::unban(s, &request, who()?).await,
        E::CreateAlias => aliases::create(s, &request, who()?).await,
        E::ResolveAlias => aliases::resolve(s, &request).await,
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
        E::EventStream => sync::events(s, &request, who()?).await,
        E::CreateFilter => sync::create_filter(s, &request, who()?).await,
        E::GetFilter => sync::get_filter(s, &request, who()?),
        E::PutAccountData => account_data::put_global(s, &request, who()?).await,
        E::GetAccountData => account_data::get_global(s, &request, who()?),
        E::PutRoomAccountData => account_data::put_room(s, &request, who()?).await,
        E::GetRoomAccountData => account_data::get_room(s, &request, who()?),
        E::GetTags => account_data::get_tags(s, &request, who()?),
        E::PutTag => account_data::put_tag(s, &request, who()?).await,
        E::DeleteTag => account_data::delete_tag(s, &request, who()?).await,
        E::GetProfile => profile::get_profile(s, &request).await,
        E::GetProfileField => profile::get_field(s, &request).await,
        E::SetProfileField => profile::set_field(s, &request, who()?).await,
        E::Typing => sync::typing(s, &request, who()?),
        E::Receipt => receipts::receipt(s, &request, who()?).await,
        E::ReadMarkers => receipts::read_markers(s, &request, who()?).await,
        E::GetPresence => sync::get_presence(s, &request, who()?),
        E::SetPresence => sync::set_presence(s, &request, who()?),
        E::ServerKeys => server_keys::server_keys(s),
        E::FederationVersion => Ok(federation::version()),
        E::QueryKeys => federation::query_keys(s, &request).await,
        E::QueryServerKeys => federation::query_server_keys(s, &request).await,
        E::QueryProfile => federation::query_profile(s, &request, origin()?),
        E::QueryDirectory => federation::query_directory(s, &request),
        E::SendTransaction => federation::events::send_transaction(s, &request, origin()?).await,
        E::FederationEvent => federation::events::event(s, &request, origin()?),
        E::EventAuth => federation::events::event_auth(s, &request, origin()?),
        E::StateIds => federation::events::state_ids(s, &request, origin()?),
        E::RoomState => federation::events::state(s, &request, origin()?),
        E::GetMissingEvents => federation::events::get_missing_events(s, &request, origin()?),
        E::Backfill => federation::events::backfill(s, &request, origin()?),
        E::MakeJoin => federation::membership::make(s, &request, origin()?, Membership::Join),
        E::SendJoinV1 => federation::membership::send(s, &request, origin()?, Membership::Join, true).await,
        E::SendJoin => federation::membership::send(s, &request, origin()?, Membership::Join, false).await,
        E::MakeLeave => federation::membership::make(s, &request, origin()?, Membership::Leave),
        E::SendLeaveV1 => federation::membership::send(s, &request, origin()?, Membership::Leave, true).await,
        E::SendLeave => federation::membership::send(s, &request, origin()?, Membership::Leave, false).await,
        E::InviteV2 => federation::membership::invite(s, &request, origin()?).await,
        E::FederationTimestampToEvent => federation::events::timestamp_to_event(s, &request, origin()?),
        E::MakeKnock => federation::membership::make(s, &request, origin()?, Membership::Knock),
        E::SendKnock => federation::membership::send(s, &request, origin()?, Membership::Knock, false).await,
        E::UserKeysQuery => federation::user_keys_query(s, &request),
        E::UserKeysClaim => federation::user_keys_claim(s, &request).await,
        E::UserDevices => federation::user_devices(s, &request),
        E::FederationPublicRooms | E::FederationSearchPublicRooms => {
            room_directory::federation_public_rooms(s, &request)
        }
        E::FederationMediaDownload => federation::media::download(s, &request).await,
        E::FederationMediaThumbnail => federation::media::thumbnail(s, &request).await,
        E::KeysUpload => keys::upload(s, &request, who()?).await,
        E::KeysQuery => keys::query(s, &request, who()?).await,
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
        E::GetPushRulesOfKind => push::get_kind(s, &request, who()?),
        E::PutPushRule => push::put_rule(s, &request, who()?).await,
        E::DeletePushRule => push::delete_rule(s, &request, who()?).await,
        E::GetPushRuleAttribute => push::get_attribute(s, &request, who()?),
        E::PutPushRuleAttribute => push::put_attribute(s, &request, who()?).await,
        E::PutDehydratedDevice => keys::put_dehydrated_device(s, &request, who()?).await,
        E::GetDehydratedDevice => keys::get_dehydrated_device(s, who()?),
        E::DeleteDehydratedDevice => keys::delete_dehydrated_device(s, who()?).await,
        E::DehydratedDeviceEvents => keys::dehydrated_device_events(s, &request, who()?),
        E::UserDirectorySearch => directory::search(s, &request, who()?),
        E::GetPublicRooms => room_directory::get_public_rooms(s, &request).await,
        E::SearchPublicRooms => room_directory::search_public_rooms(s, &request).await,
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
        E::Hierarchy => room_directory::hierarchy(s, &request, who()?).await,
        E::FederationHierarchy => federation::hierarchy(s, &request, origin()?),
        E::RoomSummary => room_directory::room_summary(s, &request, who()?),
        E::Notifications => push::notifications(s, &request, who()?),
        E::Search => search::search(s, &request, who()?),
        E::GetPushers => push::pushers(s, who()?),
        E::SetPusher => push::set_pusher(s, &request, who()?).await,
    }
}

/// Verifies another server's `X-Matrix` signature over the request as sent.
async fn authenticate_server(services: &Services, request: &Request) -> Result<ruma::OwnedServerName> {
    let uri = match &request.raw_query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    };
    let content = if request.body.iter().all(u8::is_ascii_whitespace) { None } else { Some(request.json_object()?) };
    let method = request.method.as_str();
    let origin =
        services.federation.authenticate(request.authorization.as_deref(), method, &uri, content.as_ref()).await?;
    tracing::Span::current().record("user", origin.as_str());
    Ok(origin)
}

/// Who is asking, as authentication found them.
#[derive(Clone, Copy)]
struct Requester<'r> {
    user: Option<&'r Identity>,
    origin: Option<&'r ruma::ServerName>,
    /// The user of an identity service request (of this server or a peer's).
    identity_user: Option<&'r ruma::UserId>,
}

/// What `[rate_limits]` counts a request as, and whose it is: the user,
/// the client's address, or the origin server. Server admins are exempt.
fn rate_limited_action<'r>(
    endpoint: Endpoint,
    request: &'r Request,
    requester: Requester<'r>,
) -> Option<(crate::rate_limits::Action, &'r str)> {
    use crate::rate_limits::Action;
    let user = || requester.user.filter(|who| !who.is_admin).map(|who| who.user_id.as_str());
    let address = || Some(request.client_ip.as_str());
    let (action, who) = match endpoint {
        E::SendEvent => (Action::Message, user()),
        E::CreateRoom => (Action::RoomCreation, user()),
        E::JoinRoom => (Action::Join, user()),
        E::Invite => (Action::Invite, user()),
        E::MediaUpload | E::MediaCreate | E::MediaUploadTo => (Action::MediaUpload, user()),
        E::Register => (Action::Registration, address()),
        E::Login => (Action::Login, address()),
        E::RequestRegistrationEmailToken | E::RequestAddEmailToken | E::RequestPasswordResetEmailToken => {
            (Action::ThreepidRequest, address())
        }
        E::SendTransaction => (Action::FederationTransaction, requester.origin.map(|origin| origin.as_str())),
        // Each mails someone: counted as the asking user's invites.
        E::StoreInvite => (Action::Invite, requester.identity_user.map(|user| user.as_str())),
        // Each may make this server ask another one (`/openid/userinfo`).
        E::IdentityRegister => (Action::Registration, address()),
        _ => return None,
    };
    Some((action, who?))
}

fn apply_rate_limit(s: &Services, endpoint: Endpoint, request: &Request, requester: Requester<'_>) -> Result<()> {
    let Some((action, who)) = rate_limited_action(endpoint, request, requester) else { return Ok(()) };
    s.rate_limits.take(action, who).map_err(|wait| {
        tracing::info!(?action, who, wait_ms = wait.as_millis() as u64, "rate limited");
        Error::new(
            ErrorKind::LimitExceeded { retry_after_ms: wait.as_millis().max(1) as u64 },
            "Too many requests; wait a moment",
        )
    })
}

/// The user of an identity service request: its bearer token is an
/// identity service token, or an access token of this server's user.
async fn authenticate_identity_user(services: &Services, request: &Request) -> Result<ruma::OwnedUserId> {
    let token = request.access_token.as_deref().ok_or_else(|| Error::new(ErrorKind::Unauthorized, "Missing token"))?;
    if let Some(user) = services.identity_tokens.owner(token)? {
        return Ok(user);
    }
    let identity = services.users.authenticate(token).await.map_err(|error| match error.kind {
        ErrorKind::UnknownToken { .. } => Error::new(ErrorKind::Unauthorized, "Unknown token"),
        _ => error,
    })?;
    Ok(identity.user_id)
}

/// The requesting user: the access token's owner, or on the operators'
/// socket ([`crate::http::operator_socket`]) without a token, the server's
/// administrator for the admin endpoints.
async fn authenticate(services: &Services, request: &Request, endpoint: Endpoint) -> Result<Identity> {
    if request.operator && request.access_token.is_none() && endpoint.spec().access == Access::Admins {
        return services.users.operator_identity();
    }
    let token =
        request.access_token.as_deref().ok_or_else(|| Error::new(ErrorKind::MissingToken, "Missing access token"))?;
    services.users.authenticate(token).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_is_described_once_with_consistent_parameter_names() {
        let mut seen = std::collections::HashSet::new();
        for spec in ENDPOINTS {
            assert!(seen.insert(spec.endpoint), "{:?} is described twice", spec.endpoint);
            assert!(!spec.paths.is_empty(), "{:?} has no path", spec.endpoint);
            assert!(std::ptr::eq(spec.endpoint.spec(), spec));
            // Every path names its parameters as the longest one does, in order.
            let names = |path: &str| -> Vec<String> {
                path.split('/')
                    .filter(|part| part.starts_with(':'))
                    .map(|part| part.trim_matches(&[':', '?'][..]).to_owned())
                    .collect()
            };
            let longest = spec.paths.iter().map(|p| names(p)).max_by_key(Vec::len).unwrap_or_default();
            for path in spec.paths {
                let these = names(path);
                assert_eq!(these[..], longest[..these.len()], "{:?}: {path}", spec.endpoint);
            }
        }
    }

    #[test]
    fn access_and_bodies_follow_the_descriptions() {
        assert!(!Endpoint::Login.needs_auth() && Endpoint::Login.max_body(1 << 20) == UNAUTHENTICATED_MAX_BODY);
        assert!(Endpoint::Sync.needs_auth() && Endpoint::Sync.allows_guests());
        assert!(Endpoint::CreateRoom.needs_auth() && !Endpoint::CreateRoom.allows_guests());
        assert!(Endpoint::MediaUpload.streams_body() && !Endpoint::Login.streams_body());
        assert_eq!(Endpoint::SendEvent.max_body(1 << 20), 1 << 20);
    }
}
