//! ACLs: mosquitto's `acl_file` format with Herald's `%t` and `tenant` blocks, and the rules of an [`super::AclClaim`].
