//! The messages of EPMD, Erlang's port-mapper daemon (one per host, port 4369), as far as
//! discovery needs them: a node registers its name and port with `ALIVE2_REQ` and stays
//! registered while that connection is open; `NAMES_REQ` lists every registered node. Requests
//! are built here; the replies, untrusted bytes, are parsed here with bounds and without panics.
//! The runtime's `discovery::epmd` moves the bytes.
//!
//! Every request is a 2-byte big-endian length and that many bytes; see the "Distribution
//! Protocol" chapter of Erlang's ERTS user's guide.

use thiserror::Error;

/// The port EPMD listens on by default.
pub const DEFAULT_PORT: u16 = 4369;

/// The longest `NAMES_REQ` reply read; more is refused (about 4000 registered names).
pub const MAX_NAMES_REPLY: usize = 256 * 1024;

const ALIVE2_REQ: u8 = 120;
const ALIVE2_RESP: u8 = 121;
const ALIVE2_X_RESP: u8 = 118;
const NAMES_REQ: u8 = 110;

/// We register as a hidden node: Erlang nodes do not count us among their connected nodes.
const NODE_TYPE_HIDDEN: u8 = 72;
const PROTOCOL_TCP_IPV4: u8 = 0;
/// The distribution versions an EPMD record carries; ours are never used by EPMD itself.
const DIST_VERSIONS: (u16, u16) = (6, 5);

/// A reply EPMD could not have sent, or a request it refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EpmdError {
    /// The name is too long for a request.
    #[error("a name of {0} bytes is too long for EPMD (at most 65535)")]
    NameTooLong(usize),
    /// The reply is not what EPMD sends.
    #[error("not an EPMD reply: {0}")]
    Malformed(&'static str),
    /// EPMD refused the registration, usually because the name is registered already.
    #[error("EPMD refused to register the name (result {0}); is another node registered under it?")]
    Refused(u8),
}

/// An `ALIVE2_REQ`: register `name` at `port`, with `extra` as the record's extra bytes.
pub fn register_request(name: &str, port: u16, extra: &[u8]) -> Result<Vec<u8>, EpmdError> {
    let name_len = u16::try_from(name.len()).map_err(|_| EpmdError::NameTooLong(name.len()))?;
    let extra_len = u16::try_from(extra.len()).map_err(|_| EpmdError::NameTooLong(extra.len()))?;
    let mut body = Vec::with_capacity(13 + name.len() + extra.len());
    body.push(ALIVE2_REQ);
    body.extend_from_slice(&port.to_be_bytes());
    body.push(NODE_TYPE_HIDDEN);
    body.push(PROTOCOL_TCP_IPV4);
    body.extend_from_slice(&DIST_VERSIONS.0.to_be_bytes());
    body.extend_from_slice(&DIST_VERSIONS.1.to_be_bytes());
    body.extend_from_slice(&name_len.to_be_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&extra_len.to_be_bytes());
    body.extend_from_slice(extra);
    Ok(framed(body))
}

/// The length of the reply to [`register_request`] that starts with `tag`, or an error.
pub fn register_reply_len(tag: u8) -> Result<usize, EpmdError> {
    match tag {
        ALIVE2_RESP => Ok(4),
        ALIVE2_X_RESP => Ok(6),
        _ => Err(EpmdError::Malformed("unknown reply to ALIVE2_REQ")),
    }
}

/// Parses a whole reply to [`register_request`] ([`register_reply_len`] bytes): the creation
/// number EPMD gave this registration.
pub fn parse_register_reply(reply: &[u8]) -> Result<u32, EpmdError> {
    match reply {
        [ALIVE2_RESP, 0, c1, c2] => Ok(u32::from(u16::from_be_bytes([*c1, *c2]))),
        [ALIVE2_X_RESP, 0, c1, c2, c3, c4] => Ok(u32::from_be_bytes([*c1, *c2, *c3, *c4])),
        [ALIVE2_RESP | ALIVE2_X_RESP, result, ..] => Err(EpmdError::Refused(*result)),
        _ => Err(EpmdError::Malformed("truncated reply to ALIVE2_REQ")),
    }
}

/// A `NAMES_REQ`; EPMD answers with [`parse_names`]'s input and closes the connection.
pub fn names_request() -> Vec<u8> {
    framed(vec![NAMES_REQ])
}

/// The registered names and ports in a whole `NAMES_REQ` reply: EPMD's own port (4 bytes),
/// then lines `name NAME at port PORT`. Lines of another shape are skipped.
pub fn parse_names(reply: &[u8]) -> Result<Vec<(String, u16)>, EpmdError> {
    if reply.len() > MAX_NAMES_REPLY {
        return Err(EpmdError::Malformed("NAMES reply too long"));
    }
    let text = reply
        .get(4..)
        .ok_or(EpmdError::Malformed("NAMES reply shorter than its header"))?;
    let text =
        std::str::from_utf8(text).map_err(|_| EpmdError::Malformed("NAMES reply not text"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("name ")?;
            let (name, port) = rest.rsplit_once(" at port ")?;
            Some((name.to_string(), port.trim().parse().ok()?))
        })
        .collect())
}

fn framed(body: Vec<u8>) -> Vec<u8> {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut request = Vec::with_capacity(2 + body.len());
    request.extend_from_slice(&len.to_be_bytes());
    request.extend(body);
    request
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_registration_request_has_the_layout_epmd_expects() {
        let request = register_request("ab", 4370, b"x").unwrap();
        assert_eq!(
            request,
            [
                0, 16, 120, 0x11, 0x12, 72, 0, 0, 6, 0, 5, 0, 2, b'a', b'b', 0, 1, b'x'
            ]
        );
    }

    #[test]
    fn registration_replies_give_the_creation_or_the_refusal() {
        assert_eq!(register_reply_len(121), Ok(4));
        assert_eq!(register_reply_len(118), Ok(6));
        assert!(register_reply_len(0).is_err());
        assert_eq!(parse_register_reply(&[121, 0, 0, 3]), Ok(3));
        assert_eq!(parse_register_reply(&[118, 0, 0, 0, 1, 2]), Ok(258));
        assert_eq!(
            parse_register_reply(&[118, 1, 0, 0, 0, 0]),
            Err(EpmdError::Refused(1))
        );
        assert!(parse_register_reply(&[118, 0]).is_err());
    }

    #[test]
    fn names_are_read_from_the_reply_and_odd_lines_skipped() {
        let mut reply = vec![0, 0, 0x11, 0x11];
        reply.extend_from_slice(
            b"name a at port 4370\nname b.c at port 1\ngarbage\nname d at port x\n",
        );
        assert_eq!(
            parse_names(&reply).unwrap(),
            vec![("a".to_string(), 4370), ("b.c".to_string(), 1)]
        );
        assert!(parse_names(&[0, 0]).is_err());
        assert_eq!(parse_names(&[0, 0, 0, 0]).unwrap(), vec![]);
    }

    proptest! {
        #[test]
        fn any_reply_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_names(&bytes);
            let _ = parse_register_reply(&bytes);
            if let Some(tag) = bytes.first() {
                let _ = register_reply_len(*tag);
            }
        }
    }
}
