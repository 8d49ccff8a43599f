//! Just-in-time access: people request privilege levels on a cluster for a while, with
//! a reason; approvers grant them; kubegate adds a grant's levels to the requester's
//! own until it ends (docs/access-requests.md).
//!
//! The map: [`workflow`] is the configuration (who may request what, who approves);
//! [`object`] the `AccessRequest` custom resource a request and its grant live in;
//! [`signing`] the signatures that make only authz-server's approvals count;
//! [`ledger`] what approving, denying, revoking and expiring do to an object;
//! [`grants`] the verified grants privilege resolution reads; [`store`] the API server
//! that keeps them, and its watch; [`api`] the HTTP API the CLI and console call;
//! [`console`] the web pages for approvers and requesters (login, session, CSRF);
//! [`notify`] the workflows' webhooks; [`grant_status`] tells the gateway filter which
//! grants its running streams were opened under are still in force.

pub mod api;
pub mod console;
pub mod grant_status;
pub mod grants;
pub mod ledger;
pub mod notify;
pub mod object;
pub mod signing;
pub mod store;
pub mod workflow;
