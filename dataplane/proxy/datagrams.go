package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/scitunnel/scitunnel/dataplane/config"
)

// Reading and writing the datagrams of UDP sessions without a buffer per session.
//
// A session spends most of its life waiting for its target's (or its peer's) next datagram.
// Waiting with a 64 KiB buffer in hand made every session cost 64 KiB or more whether it carried
// anything or not, which a flood of new sources multiplied. So a session takes a buffer from a
// pool only once a datagram has arrived, and gives it back once the datagram is passed on.

var datagramBuffers = sync.Pool{New: func() any { b := make([]byte, maxDatagram+1); return &b }}

// datagramReader hands over the datagrams of one session's path, one at a time; the slice
// handle gets is valid only during the call.
type datagramReader interface {
	next(handle func([]byte)) error
}

// newDatagramReader reads datagrams from a UDP socket, or frames from a stream (UDP over TLS).
func newDatagramReader(c net.Conn, framed bool) datagramReader {
	if framed {
		return newFrameReader(c)
	}
	if uc, ok := c.(*net.UDPConn); ok {
		if rc, err := uc.SyscallConn(); err == nil {
			return socketReader{rc: rc}
		}
	}
	return plainReader{c: c}
}

// socketReader waits for the socket to be readable, holding no buffer, then reads.
type socketReader struct{ rc syscall.RawConn }

func (r socketReader) next(handle func([]byte)) error {
	var buf *[]byte
	var n int
	var readErr error
	err := r.rc.Read(func(fd uintptr) bool {
		buf = datagramBuffers.Get().(*[]byte)
		for {
			n, readErr = unix.Read(int(fd), *buf)
			if !errors.Is(readErr, unix.EINTR) {
				break
			}
		}
		if errors.Is(readErr, unix.EAGAIN) {
			datagramBuffers.Put(buf)
			buf = nil
			return false // nothing there yet: wait for the socket to be readable again
		}
		return true
	})
	if buf != nil {
		defer datagramBuffers.Put(buf)
	}
	if err != nil {
		return err
	}
	if readErr != nil { // e.g. ECONNREFUSED: the target's port is closed
		return readErr
	}
	handle((*buf)[:max(n, 0)])
	return nil
}

// plainReader is the fallback for a connection that is not a UDP socket.
type plainReader struct{ c net.Conn }

func (r plainReader) next(handle func([]byte)) error {
	buf := datagramBuffers.Get().(*[]byte)
	defer datagramBuffers.Put(buf)
	n, err := r.c.Read(*buf)
	if err != nil {
		return err
	}
	handle((*buf)[:n])
	return nil
}

// frameWriter writes one frame per datagram, header and payload in a single Write so a TLS
// record never splits a small datagram.
type frameWriter struct{ w io.Writer }

var errTooLarge = errors.New("datagram larger than a frame can carry")

func (f frameWriter) write(b []byte) error {
	if len(b) > config.MaxFramedDatagram {
		return errTooLarge
	}
	buf := datagramBuffers.Get().(*[]byte)
	defer datagramBuffers.Put(buf)
	frame := binary.BigEndian.AppendUint16((*buf)[:0], uint16(len(b)))
	frame = append(frame, b...)
	_, err := f.w.Write(frame)
	return err
}

// frameReader reads frames from a stream. Its own buffer holds one TLS record (crypto/tls
// returns at most one per Read); a payload larger than what is buffered is read straight into
// the pooled datagram buffer.
type frameReader struct{ r *bufio.Reader }

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, maxTLSRecord)}
}

func (f *frameReader) next(handle func([]byte)) error {
	var hdr [2]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return err
	}
	buf := datagramBuffers.Get().(*[]byte)
	defer datagramBuffers.Put(buf)
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(f.r, (*buf)[:n]); err != nil {
		return err
	}
	handle((*buf)[:n])
	return nil
}
