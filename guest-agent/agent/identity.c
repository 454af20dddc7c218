/*
 * sf-agent identity: turn a freshly forked VM into clone <id>.
 *
 * The steps that change the machine (RNG, clock, MAC, address, hostname)
 * go through IdentityOps: real_ops does them, dry_ops only records one
 * line per step into the --dry-run file, so the agent can be tested on a
 * developer's host without touching it.  The run-dir files, /etc/hostname
 * and the post-clone scripts live under --run-dir and --root, which a
 * dry run must point at a scratch directory (main.c checks the options
 * before anything runs).  Calls only log.c.
 *
 * Dry-run record lines:
 *   id ID generation G ticket T
 *   rng add-entropy 64 HEX
 *   rng reseed
 *   clock NS
 *   mac IFACE aa:bb:cc:dd:ee:ff
 *   ip IFACE A.B.C.D/P
 *   hostname NAME
 *   script PATH status N
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "identity.h"
#include "log.h"

typedef struct IdentityOps {
    int (*rng)(void *ctx, const uint8_t *entropy, size_t len);
    int (*clock)(void *ctx, int64_t realtime_ns);
    /* MAC and IPv4 together: both may drop the routes of the interface. */
    int (*net)(void *ctx, const char *iface, const uint8_t *mac,
               const uint8_t *ipv4, int prefix);
    int (*hostname)(void *ctx, const char *name);
} IdentityOps;

/* ---- dry run: record, never apply ---- */

static int dry_rng(void *ctx, const uint8_t *e, size_t len)
{
    FILE *f = ctx;

    fprintf(f, "rng add-entropy %zu ", len);
    for (size_t i = 0; i < len; i++) {
        fprintf(f, "%02x", e[i]);
    }
    fprintf(f, "\nrng reseed\n");
    return 0;
}

static int dry_clock(void *ctx, int64_t ns)
{
    fprintf(ctx, "clock %lld\n", (long long)ns);
    return 0;
}

static int dry_net(void *ctx, const char *iface, const uint8_t *mac,
                   const uint8_t *ip, int prefix)
{
    if (mac) {
        fprintf(ctx, "mac %s %02x:%02x:%02x:%02x:%02x:%02x\n", iface, mac[0],
                mac[1], mac[2], mac[3], mac[4], mac[5]);
    }
    if (ip) {
        fprintf(ctx, "ip %s %u.%u.%u.%u/%d\n", iface, ip[0], ip[1], ip[2],
                ip[3], prefix);
    }
    return 0;
}

static int dry_hostname(void *ctx, const char *name)
{
    fprintf(ctx, "hostname %s\n", name);
    return 0;
}

static const IdentityOps dry_ops = {
    .rng = dry_rng,
    .clock = dry_clock,
    .net = dry_net,
    .hostname = dry_hostname,
};

/* ---- real steps ---- */

static int real_rng(void *ctx, const uint8_t *e, size_t len)
{
    struct {
        struct rand_pool_info info;
        uint8_t buf[SF_AGENT_ENTROPY_LEN];
    } pool;
    int fd, ret = 0;

    if (len > sizeof(pool.buf)) {
        return -EINVAL;
    }
    pool.info.entropy_count = len * 8;
    pool.info.buf_size = len;
    memcpy(pool.buf, e, len);
    fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        explicit_bzero(&pool, sizeof(pool));
        return -errno;
    }
    if (ioctl(fd, RNDADDENTROPY, &pool) < 0) {
        ret = -errno;
        agent_log("identity: RNDADDENTROPY: %s", strerror(errno));
    }
#ifdef RNDRESEEDCRNG
    if (ioctl(fd, RNDRESEEDCRNG) < 0) {
        ret = -errno;
        agent_log("identity: RNDRESEEDCRNG: %s", strerror(errno));
    }
#endif
    close(fd);
    /* The clone's seed must not linger in the agent's memory. */
    explicit_bzero(&pool, sizeof(pool));
    return ret;
}

static int real_clock(void *ctx, int64_t ns)
{
    struct timespec ts = { .tv_sec = ns / 1000000000,
                           .tv_nsec = ns % 1000000000 };

    return clock_settime(CLOCK_REALTIME, &ts) < 0 ? -errno : 0;
}

/* Gateway routes of an interface, from /proc/net/route. */
typedef struct SavedRoute {
    uint32_t dst, gw, mask; /* network byte order */
    int metric;
} SavedRoute;

static int routes_save(const char *iface, SavedRoute *r, int max)
{
    FILE *f = fopen("/proc/net/route", "re");
    char line[256], name[IFNAMSIZ + 1];
    int n = 0;

    if (!f) {
        return 0;
    }
    while (n < max && fgets(line, sizeof(line), f)) {
        unsigned dst, gw, flags, refcnt, use, metric, mask;

        if (sscanf(line, "%16s %x %x %x %u %u %u %x", name, &dst, &gw, &flags,
                   &refcnt, &use, &metric, &mask) == 8 &&
            !strcmp(name, iface) && (flags & RTF_GATEWAY)) {
            r[n++] = (SavedRoute){ dst, gw, mask, metric };
        }
    }
    fclose(f);
    return n;
}

static void routes_restore(int s, const char *iface, const SavedRoute *r, int n)
{
    for (int i = 0; i < n; i++) {
        struct rtentry rt = { 0 };
        struct sockaddr_in *sin;

        sin = (struct sockaddr_in *)&rt.rt_dst;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = r[i].dst;
        sin = (struct sockaddr_in *)&rt.rt_gateway;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = r[i].gw;
        sin = (struct sockaddr_in *)&rt.rt_genmask;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = r[i].mask;
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        rt.rt_metric = r[i].metric + 1; /* the kernel subtracts one */
        rt.rt_dev = (char *)iface;
        if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST) {
            agent_log("identity: restoring route via %s on %s: %s",
                      inet_ntoa((struct in_addr){ r[i].gw }), iface,
                      strerror(errno));
        }
    }
}

static int if_set_flags(int s, const char *iface, bool up)
{
    struct ifreq ifr = { 0 };

    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        return -errno;
    }
    if (up) {
        ifr.ifr_flags |= IFF_UP;
    } else {
        ifr.ifr_flags &= ~IFF_UP;
    }
    return ioctl(s, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

static int set_mac(int s, const char *iface, const uint8_t *mac)
{
    struct ifreq ifr = { 0 };
    int ret;

    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    /* virtio-net can change its MAC while up; most devices cannot. */
    if (ioctl(s, SIOCSIFHWADDR, &ifr) == 0) {
        return 0;
    }
    if (errno != EBUSY) {
        return -errno;
    }
    ret = if_set_flags(s, iface, false);
    if (ret < 0) {
        return ret;
    }
    ret = ioctl(s, SIOCSIFHWADDR, &ifr) < 0 ? -errno : 0;
    if_set_flags(s, iface, true);
    return ret;
}

static int set_ipv4(int s, const char *iface, const uint8_t *ip, int prefix)
{
    struct ifreq ifr = { 0 };
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    uint32_t addr, mask = prefix ? htonl(~0u << (32 - prefix)) : 0;

    memcpy(&addr, ip, 4);
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
    sin->sin_family = AF_INET;
    /* SIOCSIFADDR replaces the interface's primary address. */
    sin->sin_addr.s_addr = addr;
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0) {
        return -errno;
    }
    sin->sin_addr.s_addr = mask;
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) {
        return -errno;
    }
    sin->sin_addr.s_addr = (addr & mask) | ~mask;
    if (prefix < 31 && ioctl(s, SIOCSIFBRDADDR, &ifr) < 0) {
        return -errno;
    }
    return 0;
}

/*
 * Start the interface afresh, if it is up: taking it down drops what its
 * queues still hold (frames built with the parent's MAC and addresses,
 * which a held link kept from leaving: the qdisc would send them once the
 * link is up again; seen 2-12 ms after the release), and bringing it up
 * remakes its link-local IPv6 address from the new MAC (the kernel does
 * not remake it when only the MAC changes).  IPv4 addresses stay; routes
 * through a gateway do not (the caller restores them).
 */
static int restart_iface(int s, const char *iface)
{
    struct ifreq ifr = { 0 };
    int ret;

    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        return -errno;
    }
    if (!(ifr.ifr_flags & IFF_UP)) {
        return 0;
    }
    ret = if_set_flags(s, iface, false);
    if (ret < 0) {
        return ret;
    }
    return if_set_flags(s, iface, true);
}

static int real_net(void *ctx, const char *iface, const uint8_t *mac,
                    const uint8_t *ip, int prefix)
{
    SavedRoute routes[16];
    int s, n, ret = 0, err;

    if (if_nametoindex(iface) == 0) {
        agent_log("identity: no interface %s, network unchanged", iface);
        return -ENODEV;
    }
    s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        return -errno;
    }
    /* Taking the link down or replacing the address drops its routes. */
    n = routes_save(iface, routes, 16);
    if (mac && (err = set_mac(s, iface, mac)) < 0) {
        agent_log("identity: setting the MAC of %s: %s", iface, strerror(-err));
        ret = err;
    }
    if (ip && (err = set_ipv4(s, iface, ip, prefix)) < 0) {
        agent_log("identity: setting the address of %s: %s", iface,
                  strerror(-err));
        ret = err;
    }
    if ((err = restart_iface(s, iface)) < 0) {
        agent_log("identity: restarting %s: %s", iface, strerror(-err));
        ret = err;
    }
    routes_restore(s, iface, routes, n);
    close(s);
    return ret;
}

static int real_hostname(void *ctx, const char *name)
{
    return sethostname(name, strlen(name)) < 0 ? -errno : 0;
}

static const IdentityOps real_ops = {
    .rng = real_rng,
    .clock = real_clock,
    .net = real_net,
    .hostname = real_hostname,
};

/* ---- common steps: files under run_dir and root, scripts ---- */

static int write_file(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    int fd, len = strlen(text);

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    if (write(fd, text, len) != len || close(fd) < 0) {
        int err = errno ? errno : EIO;

        unlink(tmp);
        return -err;
    }
    return rename(tmp, path) < 0 ? -errno : 0;
}

static void write_or_log(const char *dir, const char *name, const char *text)
{
    int ret = write_file(dir, name, text);

    if (ret < 0) {
        agent_log("identity: writing %s/%s: %s", dir, name, strerror(-ret));
    }
}

bool identity_hostname_ok(const char *name, size_t field)
{
    return sf_agent_hostname_valid(name, field);
}

/* run-parts names: [A-Za-z0-9_-]+ */
static bool script_name_ok(const char *n)
{
    if (!*n) {
        return false;
    }
    for (; *n; n++) {
        if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') ||
              (*n >= '0' && *n <= '9') || *n == '_' || *n == '-')) {
            return false;
        }
    }
    return true;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run one script with a timeout; returns its wait status or -errno. */
static int run_script(const char *path, char *const env[], int timeout_s)
{
    struct timespec start, now, nap = { 0, 10 * 1000 * 1000 };
    pid_t pid;
    int ws;

    pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        int fd = open("/dev/null", O_RDONLY);

        setpgid(0, 0);
        if (fd >= 0) {
            dup2(fd, 0);
        }
        dup2(2, 1); /* script output goes to the agent's log */
        execle(path, path, (char *)NULL, env);
        _exit(127);
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pid_t r = waitpid(pid, &ws, WNOHANG);

        if (r == pid) {
            return ws;
        }
        if (r < 0 && errno != EINTR) {
            return -errno;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= timeout_s) {
            agent_log("identity: %s still running after %d s, killing it", path,
                      timeout_s);
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, &ws, 0);
            return -ETIMEDOUT;
        }
        nanosleep(&nap, NULL);
    }
}

static void run_scripts(const AgentConfig *cfg, FILE *rec,
                        const SfAgentIdentity *id, const char *host,
                        const char *ip)
{
    char dir[PATH_MAX], e_id[32], e_gen[32], e_host[96], e_ip[48], e_pfx[32];
    char *names[256], *env[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        e_id,
        e_gen,
        e_host,
        e_ip,
        e_pfx,
        NULL,
    };
    struct dirent *e;
    int n = 0;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s/etc/snowflock/post-clone.d",
             strcmp(cfg->root, "/") ? cfg->root : "");
    d = opendir(dir);
    if (!d) {
        return;
    }
    while (n < 256 && (e = readdir(d))) {
        if (script_name_ok(e->d_name)) {
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), name_cmp);

    snprintf(e_id, sizeof(e_id), "SF_CLONE_ID=%u", id->clone_id);
    snprintf(e_gen, sizeof(e_gen), "SF_GENERATION=%u", id->generation);
    /* host: validated, NUL-terminated (id->hostname need be neither). */
    snprintf(e_host, sizeof(e_host), "SF_HOSTNAME=%s", host);
    /* SF_IP is the bare address, SF_PREFIX its prefix length. */
    snprintf(e_ip, sizeof(e_ip), "SF_IP=%.*s", (int)strcspn(ip, "/"), ip);
    snprintf(e_pfx, sizeof(e_pfx), "SF_PREFIX=%s",
             strchr(ip, '/') ? strchr(ip, '/') + 1 : "");
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX + 256];
        struct stat st;
        int ws;

        if (!names[i]) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        free(names[i]);
        if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) ||
            access(path, X_OK) < 0) {
            continue;
        }
        ws = run_script(path, env, cfg->script_timeout);
        if (ws < 0) {
            agent_log("identity: %s: %s", path, strerror(-ws));
        } else if (!WIFEXITED(ws) || WEXITSTATUS(ws)) {
            agent_log("identity: %s failed (status 0x%x)", path, ws);
        }
        if (rec) {
            fprintf(rec, "script %s status %d\n", path,
                    ws < 0          ? ws
                    : WIFEXITED(ws) ? WEXITSTATUS(ws)
                                    : 128 + WTERMSIG(ws));
            fflush(rec);
        }
    }
}

/* The address as "A.B.C.D/P", or "" when the identity has none. */
static void identity_ip(const SfAgentIdentity *id, char ip[32])
{
    ip[0] = '\0';
    if (id->prefix >= 1 && id->prefix <= 32) {
        snprintf(ip, 32, "%u.%u.%u.%u/%u", id->ipv4[0], id->ipv4[1],
                 id->ipv4[2], id->ipv4[3], id->prefix);
    }
}

void identity_apply(const AgentConfig *cfg, const SfAgentIdentity *id)
{
    static const uint8_t no_mac[6];
    const IdentityOps *ops = &real_ops;
    char text[128], ip[32];
    FILE *rec = NULL;
    void *ctx = NULL;
    bool host_ok;
    int ret;

    if (cfg->dry_run) {
        rec = fopen(cfg->dry_run, "ae");
        if (!rec) {
            agent_log("identity: cannot open %s (%s), not applying anything",
                      cfg->dry_run, strerror(errno));
            return;
        }
        setvbuf(rec, NULL, _IOLBF, 0);
        ops = &dry_ops;
        ctx = rec;
        fprintf(rec, "id %u generation %u ticket %llu\n", id->clone_id,
                id->generation, (unsigned long long)id->ticket);
    }
    agent_log("identity: clone %u, generation %u, ticket %llu%s", id->clone_id,
              id->generation, (unsigned long long)id->ticket,
              rec ? " (dry run)" : "");
    host_ok = identity_hostname_ok(id->hostname, sizeof(id->hostname));
    identity_ip(id, ip);

    /* 1. who we are */
    snprintf(text, sizeof(text), "%u\n", id->clone_id);
    write_or_log(cfg->run_dir, "id", text);
    snprintf(text, sizeof(text), "%u\n", id->generation);
    write_or_log(cfg->run_dir, "generation", text);
    snprintf(text, sizeof(text), "%s\n", host_ok ? id->hostname : "");
    write_or_log(cfg->run_dir, "hostname", text);
    snprintf(text, sizeof(text), "%s\n", ip);
    write_or_log(cfg->run_dir, "ip", text);

    /* 2. RNG: never share a random stream with the parent or a sibling */
    ret = ops->rng(ctx, id->entropy, sizeof(id->entropy));
    if (ret < 0) {
        agent_log("identity: reseeding the RNG: %s", strerror(-ret));
    } else {
        agent_log("identity: RNG reseeded with the host's entropy");
    }

    /* 3. wall clock */
    if (id->realtime_ns > 0) {
        ret = ops->clock(ctx, id->realtime_ns);
        if (ret < 0) {
            agent_log("identity: clock_settime: %s", strerror(-ret));
        }
    }

    /* 4. network and name */
    {
        bool mac_ok = memcmp(id->mac, no_mac, 6) && !(id->mac[0] & 1);

        if (memcmp(id->mac, no_mac, 6) && !mac_ok) {
            agent_log("identity: ignoring multicast MAC from host");
        }
        if (id->prefix > 32) {
            agent_log("identity: ignoring bad prefix /%u", id->prefix);
        }
        if (mac_ok || ip[0]) {
            ops->net(ctx, cfg->iface, mac_ok ? id->mac : NULL,
                     ip[0] ? id->ipv4 : NULL, id->prefix);
        }
    }
    if (host_ok) {
        char etc[PATH_MAX];

        ret = ops->hostname(ctx, id->hostname);
        if (ret < 0) {
            agent_log("identity: sethostname: %s", strerror(-ret));
        }
        snprintf(etc, sizeof(etc), "%s/etc",
                 strcmp(cfg->root, "/") ? cfg->root : "");
        snprintf(text, sizeof(text), "%s\n", id->hostname);
        write_or_log(etc, "hostname", text);
    } else if (id->hostname[0]) {
        agent_log("identity: ignoring bad hostname from host");
    }

    if (rec) {
        fclose(rec);
    }
}

int identity_set_clock(const AgentConfig *cfg, int64_t realtime_ns)
{
    FILE *rec;
    int ret;

    if (!cfg->dry_run) {
        return real_clock(NULL, realtime_ns);
    }
    rec = fopen(cfg->dry_run, "ae");
    if (!rec) {
        return -errno;
    }
    ret = dry_clock(rec, realtime_ns);
    fclose(rec);
    return ret;
}

void identity_run_scripts(const AgentConfig *cfg, const SfAgentIdentity *id)
{
    bool host_ok = identity_hostname_ok(id->hostname, sizeof(id->hostname));
    FILE *rec = NULL;
    char ip[32];

    if (cfg->dry_run) {
        rec = fopen(cfg->dry_run, "ae");
        if (!rec) {
            agent_log("identity: cannot open %s (%s), not running scripts",
                      cfg->dry_run, strerror(errno));
            return;
        }
        setvbuf(rec, NULL, _IOLBF, 0);
    }
    identity_ip(id, ip);
    /* 5. the guest's own steps */
    run_scripts(cfg, rec, id, host_ok ? id->hostname : "", ip);
    if (rec) {
        fclose(rec);
    }
}
