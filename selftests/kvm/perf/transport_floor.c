/*
 * transport_floor: the C floor of the ioregionfd transport, for the dispatch_perf_test program.
 *
 * A parent and a forked child over one AF_UNIX socketpair (SOCK_SEQPACKET unless "stream" is given),
 * one blocking read(2)/write(2) per 32-byte message, as the model's vCPU threads and device tasks
 * use it. The parent takes one command per line on stdin and answers one line on stdout, so a
 * benchmark can run rounds of it interleaved with other cases:
 *
 *   rtt N      N ping-pongs: the parent writes a command, the child answers 32 bytes
 *   posted N   N one-way commands without a reply, then a fence the child answers with its count
 *   quit       stop the child and exit
 *
 * Answer: "ok <N> <elapsed ns>", or "err <text>" (then exit 1), e.g. for a lost or reordered message.
 *
 * Arguments: "stream" for SOCK_STREAM; "cpu=N" runs both ends on CPU N (the placed floor that a
 * placed ioregionfd case is compared with); "poll=NS" makes both ends spin on recv(MSG_DONTWAIT) for
 * up to NS nanoseconds before each blocking read (the polled floor that the model, which polls the
 * same way by default, is compared with).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 32
/* The commands of selftests/kvm/perf/floor_protocol.ts. */
enum { CMD_READ = 0, CMD_WRITE = 1, CMD_QUIT = 0xfe, CMD_FENCE = 0xff };

struct msg {
	uint8_t cmd;
	uint8_t pad[7];
	uint64_t seq;
	uint64_t value;
	uint64_t pad2;
};

static int is_stream;
static uint64_t poll_ns;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Spin for the start of a message for up to poll_ns: 1 when it is there, 0 to block for it. */
static int spin_for(int fd, void *buf, size_t len, ssize_t *n)
{
	if (!poll_ns)
		return 0;
	uint64_t end = now_ns() + poll_ns;
	do {
		*n = recv(fd, buf, len, MSG_DONTWAIT);
		if (*n >= 0 || (errno != EAGAIN && errno != EINTR))
			return 1;
	} while (now_ns() < end);
	return 0;
}

static void fail(const char *what)
{
	printf("err %s: %s\n", what, strerror(errno));
	exit(1);
}

/* One whole message; SOCK_STREAM may split it, SOCK_SEQPACKET never does. */
static int xread(int fd, void *buf)
{
	size_t got = 0;
	while (got < MSG) {
		ssize_t n;
		if (!(got == 0 && spin_for(fd, buf, MSG, &n)))
			n = read(fd, (char *)buf + got, MSG - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		if (!is_stream && n != MSG)
			return -1;
		got += n;
	}
	return 0;
}

static int xwrite(int fd, const void *buf)
{
	size_t done = 0;
	while (done < MSG) {
		ssize_t n = write(fd, (const char *)buf + done, MSG - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += n;
	}
	return 0;
}

/* The device: answer reads with seq + 1, count posted writes (in order), answer a fence with the count. */
static int device(int fd)
{
	struct msg m;
	uint64_t next = 0;
	while (xread(fd, &m) == 0) {
		switch (m.cmd) {
		case CMD_READ:
			m.value = m.seq + 1;
			if (xwrite(fd, &m))
				return 4;
			break;
		case CMD_WRITE:
			if (m.seq != next)
				return 2;
			next++;
			break;
		case CMD_FENCE:
			m.value = next;
			next = 0;
			if (xwrite(fd, &m))
				return 4;
			break;
		case CMD_QUIT:
			return 0;
		default:
			return 3;
		}
	}
	return 0;
}

static void rtt(int fd, uint64_t ops)
{
	struct msg m = { 0 };
	for (uint64_t i = 0; i < ops; i++) {
		m.cmd = CMD_READ;
		m.seq = i;
		if (xwrite(fd, &m))
			fail("write");
		if (xread(fd, &m))
			fail("read");
		if (m.value != i + 1) {
			printf("err answer %llu to request %llu\n", (unsigned long long)m.value, (unsigned long long)i);
			exit(1);
		}
	}
}

static void posted(int fd, uint64_t ops)
{
	struct msg m = { 0 };
	for (uint64_t i = 0; i < ops; i++) {
		m.cmd = CMD_WRITE;
		m.seq = i;
		if (xwrite(fd, &m))
			fail("write");
	}
	m.cmd = CMD_FENCE;
	if (xwrite(fd, &m))
		fail("write fence");
	if (xread(fd, &m))
		fail("read fence");
	if (m.value != ops) {
		printf("err the device counted %llu of %llu posted writes\n", (unsigned long long)m.value, (unsigned long long)ops);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		int cpu;
		unsigned long long ns;
		if (strcmp(argv[i], "stream") == 0) {
			is_stream = 1;
		} else if (sscanf(argv[i], "poll=%llu", &ns) == 1) {
			poll_ns = ns;
		} else if (sscanf(argv[i], "cpu=%d", &cpu) == 1) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			/* Before the fork: the child inherits it. */
			if (sched_setaffinity(0, sizeof(set), &set) != 0)
				fail("sched_setaffinity");
		} else {
			printf("err unknown argument: %s\n", argv[i]);
			return 1;
		}
	}
	int sv[2];
	if (socketpair(AF_UNIX, is_stream ? SOCK_STREAM : SOCK_SEQPACKET, 0, sv) != 0)
		fail("socketpair");
	pid_t pid = fork();
	if (pid < 0)
		fail("fork");
	if (pid == 0) {
		close(sv[0]);
		_exit(device(sv[1]));
	}
	close(sv[1]);
	int fd = sv[0];

	char line[128];
	while (fgets(line, sizeof(line), stdin)) {
		char what[16];
		unsigned long long ops;
		if (sscanf(line, "%15s %llu", what, &ops) == 2 && (!strcmp(what, "rtt") || !strcmp(what, "posted"))) {
			uint64_t t0 = now_ns();
			(strcmp(what, "rtt") ? posted : rtt)(fd, ops);
			uint64_t t1 = now_ns();
			printf("ok %llu %llu\n", ops, (unsigned long long)(t1 - t0));
			fflush(stdout);
		} else if (!strncmp(line, "quit", 4)) {
			break;
		} else {
			printf("err unknown command: %s", line);
			return 1;
		}
	}
	struct msg q = { .cmd = CMD_QUIT };
	xwrite(fd, &q);
	int status;
	if (waitpid(pid, &status, 0) < 0)
		fail("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		printf("err the device child failed (status 0x%x)\n", status);
		return 1;
	}
	return 0;
}
