package wire

import (
	"encoding/binary"
	"time"
)

// Basic properties, in property-list order. Each flag is the bit that marks
// the property present in the 16-bit property-flags word (first property in
// the most significant bit; bit 0 announces another flags word).
const (
	flagContentType     = 1 << 15
	flagContentEncoding = 1 << 14
	flagHeaders         = 1 << 13
	flagDeliveryMode    = 1 << 12
	flagPriority        = 1 << 11
	flagCorrelationID   = 1 << 10
	flagReplyTo         = 1 << 9
	flagExpiration      = 1 << 8
	flagMessageID       = 1 << 7
	flagTimestamp       = 1 << 6
	flagType            = 1 << 5
	flagUserID          = 1 << 4
	flagAppID           = 1 << 3
	flagClusterID       = 1 << 2
	flagContinuation    = 1 << 0

	knownBasicFlags = flagContentType | flagContentEncoding | flagHeaders | flagDeliveryMode |
		flagPriority | flagCorrelationID | flagReplyTo | flagExpiration | flagMessageID |
		flagTimestamp | flagType | flagUserID | flagAppID | flagClusterID
)

// Properties are the basic class content properties. A field is present on
// the wire iff it is non-zero (Headers: non-nil).
type Properties struct {
	ContentType, ContentEncoding string
	Headers                      Table
	DeliveryMode, Priority       uint8
	CorrelationID, ReplyTo       string
	Expiration, MessageID        string
	Timestamp                    time.Time // zero = absent
	Type, UserID, AppID          string
	ClusterID                    string // the spec's "reserved" property
}

// Append appends the property flags and list, as carried after the fixed
// part of a content header.
func (p *Properties) Append(dst []byte) []byte {
	var flags uint16
	set := func(present bool, flag uint16) {
		if present {
			flags |= flag
		}
	}
	set(p.ContentType != "", flagContentType)
	set(p.ContentEncoding != "", flagContentEncoding)
	set(p.Headers != nil, flagHeaders)
	set(p.DeliveryMode != 0, flagDeliveryMode)
	set(p.Priority != 0, flagPriority)
	set(p.CorrelationID != "", flagCorrelationID)
	set(p.ReplyTo != "", flagReplyTo)
	set(p.Expiration != "", flagExpiration)
	set(p.MessageID != "", flagMessageID)
	set(!p.Timestamp.IsZero(), flagTimestamp)
	set(p.Type != "", flagType)
	set(p.UserID != "", flagUserID)
	set(p.AppID != "", flagAppID)
	set(p.ClusterID != "", flagClusterID)

	dst = AppendUint16(dst, flags)
	if flags&flagContentType != 0 {
		dst = AppendShortString(dst, p.ContentType)
	}
	if flags&flagContentEncoding != 0 {
		dst = AppendShortString(dst, p.ContentEncoding)
	}
	if flags&flagHeaders != 0 {
		dst = AppendTable(dst, p.Headers)
	}
	if flags&flagDeliveryMode != 0 {
		dst = append(dst, p.DeliveryMode)
	}
	if flags&flagPriority != 0 {
		dst = append(dst, p.Priority)
	}
	if flags&flagCorrelationID != 0 {
		dst = AppendShortString(dst, p.CorrelationID)
	}
	if flags&flagReplyTo != 0 {
		dst = AppendShortString(dst, p.ReplyTo)
	}
	if flags&flagExpiration != 0 {
		dst = AppendShortString(dst, p.Expiration)
	}
	if flags&flagMessageID != 0 {
		dst = AppendShortString(dst, p.MessageID)
	}
	if flags&flagTimestamp != 0 {
		dst = AppendUint64(dst, uint64(p.Timestamp.Unix()))
	}
	if flags&flagType != 0 {
		dst = AppendShortString(dst, p.Type)
	}
	if flags&flagUserID != 0 {
		dst = AppendShortString(dst, p.UserID)
	}
	if flags&flagAppID != 0 {
		dst = AppendShortString(dst, p.AppID)
	}
	if flags&flagClusterID != 0 {
		dst = AppendShortString(dst, p.ClusterID)
	}
	return dst
}

// readPropertyFlags reads the flags words. Basic has only fourteen
// properties, so any flag in a continuation word (or the unused bit 1) names
// a property whose type we cannot know, and the list cannot be parsed.
func readPropertyFlags(props []byte) (flags uint16, off int, err error) {
	for word := 0; ; word++ {
		if len(props)-off < 2 {
			return 0, 0, syntaxErrorf("basic properties: truncated property flags")
		}
		w := binary.BigEndian.Uint16(props[off:])
		off += 2
		if word == 0 {
			flags = w
		}
		unknown := w &^ flagContinuation
		if word == 0 {
			unknown &^= knownBasicFlags
		}
		if unknown != 0 {
			return 0, 0, syntaxErrorf("basic properties: unknown property flags 0x%04x in flags word %d", w, word)
		}
		if w&flagContinuation == 0 {
			return flags, off, nil
		}
	}
}

// DecodeProperties decodes property flags and list (ContentHeader.Props).
// Malformed input yields *ProtocolError{Code: SyntaxError}.
func DecodeProperties(props []byte) (Properties, error) {
	var p Properties
	flags, off, err := readPropertyFlags(props)
	if err != nil {
		return p, err
	}
	d := argDecoder{buf: props, off: off, method: "basic properties"}
	if flags&flagContentType != 0 {
		p.ContentType = d.shortstr("content-type", "")
	}
	if flags&flagContentEncoding != 0 {
		p.ContentEncoding = d.shortstr("content-encoding", "")
	}
	if flags&flagHeaders != 0 {
		p.Headers = d.table("headers")
	}
	if flags&flagDeliveryMode != 0 {
		p.DeliveryMode = d.octet("delivery-mode")
	}
	if flags&flagPriority != 0 {
		p.Priority = d.octet("priority")
	}
	if flags&flagCorrelationID != 0 {
		p.CorrelationID = d.shortstr("correlation-id", "")
	}
	if flags&flagReplyTo != 0 {
		p.ReplyTo = d.shortstr("reply-to", "")
	}
	if flags&flagExpiration != 0 {
		p.Expiration = d.shortstr("expiration", "")
	}
	if flags&flagMessageID != 0 {
		p.MessageID = d.shortstr("message-id", "")
	}
	if flags&flagTimestamp != 0 {
		p.Timestamp = d.timestamp("timestamp")
	}
	if flags&flagType != 0 {
		p.Type = d.shortstr("type", "")
	}
	if flags&flagUserID != 0 {
		p.UserID = d.shortstr("user-id", "")
	}
	if flags&flagAppID != 0 {
		p.AppID = d.shortstr("app-id", "")
	}
	if flags&flagClusterID != 0 {
		p.ClusterID = d.shortstr("cluster-id", "")
	}
	if err := d.finish(); err != nil {
		return Properties{}, err
	}
	return p, nil
}

// PropsSummary holds the few properties routing and queues need, as slices of
// the scanned bytes. Headers is the raw encoded table including its 4-byte
// length prefix (nil if absent); Expiration is the raw string (valid only if
// HasExpiration).
type PropsSummary struct {
	DeliveryMode, Priority uint8
	Expiration             []byte
	Headers                []byte
	HasExpiration          bool
}

// ScanProperties walks property flags and list without decoding the headers
// table or allocating, for the broker's publish path. It checks the list is
// well-formed as far as field lengths go; the headers table's contents are
// not checked.
func ScanProperties(props []byte) (PropsSummary, error) {
	var s PropsSummary
	flags, off, err := readPropertyFlags(props)
	if err != nil {
		return s, err
	}
	// Walk the properties in list order; bit 15 is the first property.
	for bit := uint16(15); bit >= 2; bit-- {
		flag := uint16(1) << bit
		if flags&flag == 0 {
			continue
		}
		rest := props[off:]
		switch flag {
		case flagDeliveryMode, flagPriority:
			if len(rest) < 1 {
				return PropsSummary{}, syntaxErrorf("basic properties: truncated %s", propertyName(flag))
			}
			if flag == flagDeliveryMode {
				s.DeliveryMode = rest[0]
			} else {
				s.Priority = rest[0]
			}
			off++
		case flagTimestamp:
			if len(rest) < 8 {
				return PropsSummary{}, syntaxErrorf("basic properties: truncated timestamp")
			}
			off += 8
		case flagHeaders:
			_, n, err := lengthPrefixed(rest, "headers table")
			if err != nil {
				return PropsSummary{}, syntaxErrorf("basic properties: %s", tableErrText(err))
			}
			s.Headers = rest[:n:n]
			off += n
		default: // every other basic property is a shortstr
			if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
				return PropsSummary{}, syntaxErrorf("basic properties: truncated %s", propertyName(flag))
			}
			n := 1 + int(rest[0])
			if flag == flagExpiration {
				s.Expiration = rest[1:n:n]
				s.HasExpiration = true
			}
			off += n
		}
	}
	if off != len(props) {
		return PropsSummary{}, syntaxErrorf("basic properties: %d unexpected trailing bytes", len(props)-off)
	}
	return s, nil
}

func propertyName(flag uint16) string {
	switch flag {
	case flagContentType:
		return "content-type"
	case flagContentEncoding:
		return "content-encoding"
	case flagHeaders:
		return "headers"
	case flagDeliveryMode:
		return "delivery-mode"
	case flagPriority:
		return "priority"
	case flagCorrelationID:
		return "correlation-id"
	case flagReplyTo:
		return "reply-to"
	case flagExpiration:
		return "expiration"
	case flagMessageID:
		return "message-id"
	case flagTimestamp:
		return "timestamp"
	case flagType:
		return "type"
	case flagUserID:
		return "user-id"
	case flagAppID:
		return "app-id"
	case flagClusterID:
		return "cluster-id"
	}
	return "unknown property"
}
