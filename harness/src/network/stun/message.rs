//! The STUN messages this module speaks, encoded and decoded in one place:
//! Binding requests and success responses (RFC 5389), with the attributes
//! of NAT behaviour discovery (RFC 5780) and those older clients read
//! (RFC 3489).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The magic cookie of every RFC 5389 message.
pub(super) const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The header: type, length, magic cookie, transaction id.
const HEADER_LEN: usize = 20;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;

const MAPPED_ADDRESS: u16 = 0x0001;
const SOURCE_ADDRESS: u16 = 0x0004;
const CHANGE_REQUEST: u16 = 0x0003;
const CHANGED_ADDRESS: u16 = 0x0005;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const SOFTWARE: u16 = 0x8022;
const RESPONSE_ORIGIN: u16 = 0x802b;
const OTHER_ADDRESS: u16 = 0x802c;

const CHANGE_IP: u32 = 0x4;
const CHANGE_PORT: u32 = 0x2;

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// The 96-bit transaction id that pairs a response with its request.
pub(super) type TransactionId = [u8; 12];

/// The two kinds of message this module handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// A Binding Request.
    Request,
    /// A Binding Success Response.
    Success,
}

/// What a CHANGE-REQUEST asks: an answer from the other address, the other
/// port, both, or neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) ip: bool,
    pub(super) port: bool,
}

/// One attribute this module understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Attribute {
    /// MAPPED-ADDRESS: the request's source, as seen by the server.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS: the same, obfuscated against rewriting ALGs.
    XorMappedAddress(SocketAddr),
    /// CHANGE-REQUEST: where the answer should come from.
    ChangeRequest(Change),
    /// SOURCE-ADDRESS (RFC 3489): where the answer came from.
    SourceAddress(SocketAddr),
    /// CHANGED-ADDRESS (RFC 3489): the server's other address and port.
    ChangedAddress(SocketAddr),
    /// SOFTWARE: who answered.
    Software(String),
    /// RESPONSE-ORIGIN: where the answer came from.
    ResponseOrigin(SocketAddr),
    /// OTHER-ADDRESS: the server's other address and port.
    OtherAddress(SocketAddr),
}

/// A STUN message: its class, transaction and attributes in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Message {
    pub(super) class: Class,
    pub(super) transaction: TransactionId,
    pub(super) attributes: Vec<Attribute>,
}

/// Why a datagram is not a message this module handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a STUN Binding message: {}", self.0)
    }
}

impl Message {
    /// A Binding Request, with a CHANGE-REQUEST when `change` asks for one.
    pub(super) fn request(transaction: TransactionId, change: Change) -> Message {
        let attributes = if change == Change::default() {
            Vec::new()
        } else {
            vec![Attribute::ChangeRequest(change)]
        };
        Message {
            class: Class::Request,
            transaction,
            attributes,
        }
    }

    /// What its CHANGE-REQUEST asks (nothing without one).
    pub(super) fn change(&self) -> Change {
        self.find(|a| match a {
            Attribute::ChangeRequest(change) => Some(*change),
            _ => None,
        })
        .unwrap_or_default()
    }

    /// Its mapped address: XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an
    /// older server.
    pub(super) fn mapped(&self) -> Option<SocketAddr> {
        self.address(|a| matches!(a, Attribute::XorMappedAddress(_)))
            .or_else(|| self.address(|a| matches!(a, Attribute::MappedAddress(_))))
    }

    /// Where the server says it answered from: RESPONSE-ORIGIN, or
    /// SOURCE-ADDRESS from an older server.
    pub(super) fn origin(&self) -> Option<SocketAddr> {
        self.address(|a| matches!(a, Attribute::ResponseOrigin(_)))
            .or_else(|| self.address(|a| matches!(a, Attribute::SourceAddress(_))))
    }

    /// The server's other address: OTHER-ADDRESS, or CHANGED-ADDRESS from
    /// an older server.
    pub(super) fn other(&self) -> Option<SocketAddr> {
        self.address(|a| matches!(a, Attribute::OtherAddress(_)))
            .or_else(|| self.address(|a| matches!(a, Attribute::ChangedAddress(_))))
    }

    fn address(&self, wanted: impl Fn(&Attribute) -> bool) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::MappedAddress(addr)
            | Attribute::XorMappedAddress(addr)
            | Attribute::SourceAddress(addr)
            | Attribute::ChangedAddress(addr)
            | Attribute::ResponseOrigin(addr)
            | Attribute::OtherAddress(addr)
                if wanted(a) =>
            {
                Some(*addr)
            }
            _ => None,
        })
    }

    fn find<T>(&self, pick: impl Fn(&Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(pick)
    }

    /// The message on the wire; each attribute padded to four bytes with
    /// zeros.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for attribute in &self.attributes {
            let (kind, value) = self.encode_attribute(attribute);
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(&value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let kind = match self.class {
            Class::Request => BINDING_REQUEST,
            Class::Success => BINDING_SUCCESS,
        };
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(&kind.to_be_bytes());
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&self.transaction);
        bytes.extend_from_slice(&body);
        bytes
    }

    fn encode_attribute(&self, attribute: &Attribute) -> (u16, Vec<u8>) {
        match attribute {
            Attribute::MappedAddress(addr) => (MAPPED_ADDRESS, plain_address(*addr)),
            Attribute::XorMappedAddress(addr) => (
                XOR_MAPPED_ADDRESS,
                xor_address(plain_address(*addr), &self.transaction),
            ),
            Attribute::ChangeRequest(change) => {
                let flags = if change.ip { CHANGE_IP } else { 0 }
                    | if change.port { CHANGE_PORT } else { 0 };
                (CHANGE_REQUEST, flags.to_be_bytes().to_vec())
            }
            Attribute::SourceAddress(addr) => (SOURCE_ADDRESS, plain_address(*addr)),
            Attribute::ChangedAddress(addr) => (CHANGED_ADDRESS, plain_address(*addr)),
            Attribute::Software(text) => (SOFTWARE, text.as_bytes().to_vec()),
            Attribute::ResponseOrigin(addr) => (RESPONSE_ORIGIN, plain_address(*addr)),
            Attribute::OtherAddress(addr) => (OTHER_ADDRESS, plain_address(*addr)),
        }
    }

    /// Reads a Binding Request or Success Response; attributes it does not
    /// know (FINGERPRINT, MESSAGE-INTEGRITY, …) are skipped unchecked.
    pub(super) fn decode(bytes: &[u8]) -> Result<Message, Malformed> {
        let header = bytes
            .get(..HEADER_LEN)
            .ok_or(Malformed("shorter than a STUN header"))?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if kind & 0xc000 != 0 {
            return Err(Malformed("the first two bits are not zero"));
        }
        if header[4..8] != MAGIC_COOKIE.to_be_bytes() {
            return Err(Malformed("no magic cookie"));
        }
        if length % 4 != 0 || HEADER_LEN + length != bytes.len() {
            return Err(Malformed("its length does not match the datagram's"));
        }
        let class = match kind {
            BINDING_REQUEST => Class::Request,
            BINDING_SUCCESS => Class::Success,
            _ => {
                return Err(Malformed(
                    "neither a Binding Request nor a Success Response",
                ));
            }
        };
        let mut transaction = TransactionId::default();
        transaction.copy_from_slice(&header[8..HEADER_LEN]);
        let mut attributes = Vec::new();
        let mut rest = &bytes[HEADER_LEN..];
        while !rest.is_empty() {
            let [k0, k1, l0, l1, tail @ ..] = rest else {
                return Err(Malformed("an attribute header is cut short"));
            };
            let kind = u16::from_be_bytes([*k0, *k1]);
            let length = usize::from(u16::from_be_bytes([*l0, *l1]));
            // The message's length is a multiple of 4, so a value that fits
            // has its padding too.
            let (value, next) = tail
                .get(..length)
                .zip(tail.get(length.next_multiple_of(4)..))
                .ok_or(Malformed("an attribute is longer than the message"))?;
            rest = next;
            if let Some(attribute) = decode_attribute(kind, value, &transaction)? {
                attributes.push(attribute);
            }
        }
        Ok(Message {
            class,
            transaction,
            attributes,
        })
    }
}

fn decode_attribute(
    kind: u16,
    value: &[u8],
    transaction: &TransactionId,
) -> Result<Option<Attribute>, Malformed> {
    Ok(Some(match kind {
        MAPPED_ADDRESS => Attribute::MappedAddress(read_address(value)?),
        XOR_MAPPED_ADDRESS => {
            Attribute::XorMappedAddress(read_address(&xor_address(value.to_vec(), transaction))?)
        }
        CHANGE_REQUEST => {
            let flags: [u8; 4] = value
                .try_into()
                .map_err(|_| Malformed("CHANGE-REQUEST is not four bytes long"))?;
            let flags = u32::from_be_bytes(flags);
            Attribute::ChangeRequest(Change {
                ip: flags & CHANGE_IP != 0,
                port: flags & CHANGE_PORT != 0,
            })
        }
        SOURCE_ADDRESS => Attribute::SourceAddress(read_address(value)?),
        CHANGED_ADDRESS => Attribute::ChangedAddress(read_address(value)?),
        SOFTWARE => Attribute::Software(String::from_utf8_lossy(value).into_owned()),
        RESPONSE_ORIGIN => Attribute::ResponseOrigin(read_address(value)?),
        OTHER_ADDRESS => Attribute::OtherAddress(read_address(value)?),
        _ => return Ok(None),
    }))
}

/// The value of an address attribute: a zero byte, the family, the port
/// and the address.
fn plain_address(addr: SocketAddr) -> Vec<u8> {
    let mut value = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            value.push(FAMILY_V4);
            value.extend_from_slice(&addr.port().to_be_bytes());
            value.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            value.push(FAMILY_V6);
            value.extend_from_slice(&addr.port().to_be_bytes());
            value.extend_from_slice(&ip.octets());
        }
    }
    value
}

/// XORs an address value's port with the cookie's top half and its address
/// with the cookie and the transaction id (RFC 5389, section 15.2): the
/// same operation encodes and decodes.
fn xor_address(mut value: Vec<u8>, transaction: &TransactionId) -> Vec<u8> {
    let mask = MAGIC_COOKIE.to_be_bytes().into_iter().chain(*transaction);
    for (byte, mask) in value
        .iter_mut()
        .skip(2)
        .zip(mask.clone().take(2).chain(mask))
    {
        *byte ^= mask;
    }
    value
}

fn read_address(value: &[u8]) -> Result<SocketAddr, Malformed> {
    let [_, family, p0, p1, address @ ..] = value else {
        return Err(Malformed("an address attribute is cut short"));
    };
    let port = u16::from_be_bytes([*p0, *p1]);
    let ip = match *family {
        FAMILY_V4 => <[u8; 4]>::try_from(address)
            .map(IpAddr::from)
            .map_err(|_| Malformed("an IPv4 address is not four bytes long"))?,
        FAMILY_V6 => <[u8; 16]>::try_from(address)
            .map(IpAddr::from)
            .map_err(|_| Malformed("an IPv6 address is not sixteen bytes long"))?,
        _ => return Err(Malformed("an address attribute has an unknown family")),
    };
    Ok(SocketAddr::new(ip, port))
}
