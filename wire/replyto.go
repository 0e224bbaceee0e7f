package wire

// ReplaceReplyTo returns props with the reply-to property set to replyTo, leaving every other
// property byte for byte as it was (re-encoding would normalise header tables). ok is false
// when props has no reply-to or is malformed.
func ReplaceReplyTo(props []byte, replyTo string) (out []byte, ok bool) {
	if len(replyTo) > 255 {
		return nil, false
	}
	flags, off, err := readPropertyFlags(props)
	if err != nil || flags&flagReplyTo == 0 {
		return nil, false
	}
	for bit := uint16(15); bit >= 2; bit-- {
		flag := uint16(1) << bit
		if flags&flag == 0 {
			continue
		}
		rest := props[off:]
		var n int
		switch flag {
		case flagDeliveryMode, flagPriority:
			n = 1
		case flagTimestamp:
			n = 8
		case flagHeaders:
			_, hn, err := lengthPrefixed(rest, "headers table")
			if err != nil {
				return nil, false
			}
			n = hn
		default:
			if len(rest) < 1 {
				return nil, false
			}
			n = 1 + int(rest[0])
		}
		if len(rest) < n {
			return nil, false
		}
		if flag == flagReplyTo {
			out = make([]byte, 0, len(props)-n+1+len(replyTo))
			out = append(out, props[:off]...)
			out = AppendShortString(out, replyTo)
			return append(out, props[off+n:]...), true
		}
		off += n
	}
	return nil, false
}
