// Package splice moves bytes from one TCP socket to another inside the kernel with splice(2),
// through a pipe, reporting every chunk as it goes.
//
// Go's (*net.TCPConn).ReadFrom splices too, but it returns (and so reports a count) only when
// its limit is reached or the source ends: a relay that must show exact, live byte counts would
// see nothing of a burst followed by silence. This loop reports each chunk the moment it has
// been written out. It is written against RawConn, so waiting for readiness parks the goroutine
// on the runtime poller and deadlines and Close work as on any net.Conn.
package splice

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// pipeSize is the pipe's capacity, so one round moves up to this much. Larger rounds mean
// fewer system calls; 1 MiB is the unprivileged maximum (fs.pipe-max-size). When the kernel
// refuses it (a user over fs.pipe-user-pages-soft), the pipe keeps its default 64 KiB.
const pipeSize = 1 << 20

// ErrUnsupported is returned, before any byte moved, when the kernel cannot splice these
// sockets; the caller should copy through user space instead.
var ErrUnsupported = errors.New("splice unsupported for these sockets")

// Copy moves bytes from src to dst until src reaches EOF (then it returns nil) or either side
// fails. progress is called with the size of every chunk written to dst.
func Copy(dst, src *net.TCPConn, progress func(int64)) error {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return err
	}
	pr, pw := fds[0], fds[1]
	defer unix.Close(pr)
	defer unix.Close(pw)
	_, _ = unix.FcntlInt(uintptr(pw), unix.F_SETPIPE_SZ, pipeSize)

	moved := false
	for {
		// Fill the (empty) pipe from src. EAGAIN here means src has nothing to read: park.
		var in int
		var spliceErr error
		err := srcRC.Read(func(fd uintptr) bool {
			in, spliceErr = spliceRetry(int(fd), pw, pipeSize)
			return spliceErr != unix.EAGAIN
		})
		if err == nil {
			err = spliceErr
		}
		if err != nil {
			if !moved && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)) {
				return ErrUnsupported
			}
			return err
		}
		if in == 0 {
			return nil // EOF
		}
		moved = true
		// Drain the pipe into dst. EAGAIN here means dst's send buffer is full: park.
		for left := in; left > 0; {
			var out int
			err := dstRC.Write(func(fd uintptr) bool {
				out, spliceErr = spliceRetry(pr, int(fd), left)
				return spliceErr != unix.EAGAIN
			})
			if err == nil {
				err = spliceErr
			}
			if err != nil {
				return err
			}
			left -= out
			progress(int64(out))
		}
	}
}

func spliceRetry(from, to, n int) (int, error) {
	for {
		m, err := unix.Splice(from, nil, to, nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if err == syscall.EINTR {
			continue
		}
		return int(m), err
	}
}
