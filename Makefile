# timpush: build, test and run the gateway against Debian 12's nginx.
#
#   make run     install what is missing, build, start Redis and nginx with
#                conf-examples/quickstart.conf, register a demo device
#   make stop    stop what "make run" started
#   make test    install what is missing, build, run every suite
#   make test-valgrind   the same suites with nginx under valgrind
#   make test-cluster    the Redis Cluster suites (t/cluster/): a
#                3-master / 3-replica cluster on loopback per suite
#   make unit    the rendering and cluster-routing unit tests; make fuzz:
#                the push-body fuzzer
#   make test-mutants   each mutant of t/mutants/ built and tested: every
#                one must be killed by the suites
#   make bench   the benchmarks (bench/README.md)
#   make install     the gateway module, its load_module snippet, the docs
#                and tools/timpush-reindex into the system (DESTDIR=...
#                for a staging directory); make uninstall removes them

SHELL := /bin/bash

NGX_SRC ?= /usr/share/nginx/src
NGINX ?= /usr/sbin/nginx
BUILD := $(CURDIR)/build
OBJS := $(BUILD)/objs
MODULE := $(OBJS)/ngx_http_timpush_module.so
MOCK_MODULE := $(OBJS)/ngx_http_timpush_mock_module.so
CERTS := $(CURDIR)/t/cert/out
SOURCES := config $(wildcard ngx_http_timpush_module/*.[ch])

CC_OPT := -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter

DEB_BUILD := nginx nginx-dev gcc make libssl-dev libyajl-dev \
	libhiredis-dev libnghttp2-dev openssl
DEB_RUN := redis-server curl
DEB_TEST := perl libtest-base-perl libipc-run-perl liburi-perl libwww-perl \
	libtest-longstring-perl liblist-moreutils-perl libtext-diff-perl \
	valgrind nghttp2-client libio-socket-ssl-perl libnet-ssleay-perl \
	libfaketime gdb prometheus
# t/cluster/ (t/lib/Timpush/Cluster.pm): redis-cli --cluster, and openssl
# for the TLS nodes' certificates
DEB_CLUSTER := redis-server redis-tools openssl

# make install: where Debian's nginx and its libnginx-mod-* packages put
# things (the snippet and its link named as those packages name theirs)
DESTDIR ?=
MODULES_DIR ?= /usr/lib/nginx/modules
MODULES_AVAILABLE ?= /usr/share/nginx/modules-available
MODULES_ENABLED ?= /etc/nginx/modules-enabled
DOC_DIR ?= /usr/share/doc/timpush
SBIN_DIR ?= /usr/local/sbin
SNIPPET := mod-http-timpush.conf
SNIPPET_LINK := 50-mod-http-timpush.conf
# relative to nginx's prefix (/usr/share/nginx/modules is a link to
# /usr/lib/nginx/modules), as Debian's snippets say it
LOAD_PATH := $(if $(filter /usr/lib/nginx/modules,$(MODULES_DIR)),modules,$(MODULES_DIR))

.PHONY: all build deps deps-test deps-node certs test test-valgrind run stop \
	clean static unit fuzz bench bench-profile test-mutants install \
	uninstall test-cluster

all: build

build: deps $(MODULE) $(MOCK_MODULE)

deps:
	@./.ci/deps $(DEB_BUILD) $(DEB_RUN)

deps-test: deps-node
	@./.ci/deps $(DEB_BUILD) $(DEB_RUN) $(DEB_TEST)

# t/openapi.t's checker: node, npm, and t/openapi/package-lock.json's
# packages (Debian 12 packages no OpenAPI validator)
deps-node:
	@command -v node >/dev/null && command -v npm >/dev/null \
	    || ./.ci/deps nodejs npm
	@if [ ! -f t/openapi/node_modules/.package-lock.json ] \
	    || [ t/openapi/package-lock.json -nt \
	         t/openapi/node_modules/.package-lock.json ]; then \
	    echo "timpush: npm ci in t/openapi"; \
	    cd t/openapi && npm ci --no-audit --no-fund --loglevel=error; \
	fi

$(BUILD)/nginx-src/configure:
	rm -rf $(BUILD)/nginx-src
	mkdir -p $(BUILD)
	cp -a $(NGX_SRC) $(BUILD)/nginx-src

$(OBJS)/Makefile: config $(BUILD)/nginx-src/configure
	cd $(BUILD)/nginx-src && . ./conf_flags \
	    && ./configure "$${NGX_CONF_FLAGS[@]}" --builddir=$(OBJS) \
	        --with-cc-opt="$(CC_OPT)" --add-dynamic-module=$(CURDIR) \
	        > $(BUILD)/configure.log 2>&1 \
	    || { tail -20 $(BUILD)/configure.log; exit 1; }

# both modules in one run of nginx's Makefile
$(MODULE) $(MOCK_MODULE) &: $(OBJS)/Makefile $(SOURCES)
	$(MAKE) -C $(BUILD)/nginx-src -f $(OBJS)/Makefile modules

# --add-module into a full nginx source tree (NGX_FULL_SRC=/path/to/nginx,
# a release tarball or a git checkout); rewrite and gzip are left out so
# that no PCRE or zlib headers are needed
static: deps
	@test -n "$(NGX_FULL_SRC)" || { echo "set NGX_FULL_SRC"; exit 1; }
	cd $(NGX_FULL_SRC) && { test -x configure && c=./configure \
	        || c=auto/configure; } \
	    && $$c --with-http_ssl_module --with-http_v2_module \
	        --without-http_rewrite_module --without-http_gzip_module \
	        --with-cc-opt="$(CC_OPT)" --builddir=$(BUILD)/static \
	        --add-module=$(CURDIR) > $(BUILD)/static-configure.log 2>&1 \
	    || { tail -20 $(BUILD)/static-configure.log; exit 1; }
	$(MAKE) -C $(NGX_FULL_SRC) -f $(BUILD)/static/Makefile
	$(BUILD)/static/nginx -V

certs:
	@sh t/cert/make.sh $(CERTS)

test: deps-test build certs
	@./t/run.sh

test-valgrind: deps-test build certs
	@TEST_NGINX_USE_VALGRIND=1 ./t/run.sh

# not part of "make test": each suite starts its own cluster
test-cluster: deps-test build certs
	@./.ci/deps $(DEB_CLUSTER)
	@./t/run.sh t/cluster/*.t

# MUTANTS="name ..." runs only those (t/mutants/README.md)
test-mutants: deps-test build certs
	@./t/mutants/run.sh $(MUTANTS)

# the unit tests alone (make test runs them too)
unit: build
	@$(MAKE) -s -f t/unit/Makefile check

# the push-body fuzzer (clang's libFuzzer), FUZZ_TIME seconds
fuzz: build
	@t/fuzz/run.sh $(or $(FUZZ_TIME),600)

# the benchmarks of bench/README.md: the table goes to bench/results.md
bench:
	@./bench/run.sh

bench-profile:
	@./bench/run.sh profile

run: build certs
	@./conf-examples/run.sh start

stop:
	@./conf-examples/run.sh stop

# The module (not the simulator) where Debian's nginx loads modules from,
# enabled as a libnginx-mod-* package does it: a snippet with its
# load_module line in modules-available, linked from modules-enabled
# (which /etc/nginx/nginx.conf includes).  "nginx -t" and a reload or
# restart are the operator's (docs/operations.md).
install: build
	install -d $(DESTDIR)$(MODULES_DIR) $(DESTDIR)$(MODULES_AVAILABLE) \
	    $(DESTDIR)$(MODULES_ENABLED) $(DESTDIR)$(DOC_DIR)/docs \
	    $(DESTDIR)$(DOC_DIR)/conf-examples $(DESTDIR)$(SBIN_DIR)
	install -m 644 $(MODULE) $(DESTDIR)$(MODULES_DIR)/
	echo 'load_module $(LOAD_PATH)/ngx_http_timpush_module.so;' \
	    > $(DESTDIR)$(MODULES_AVAILABLE)/$(SNIPPET)
	chmod 644 $(DESTDIR)$(MODULES_AVAILABLE)/$(SNIPPET)
	ln -sfn $(MODULES_AVAILABLE)/$(SNIPPET) \
	    $(DESTDIR)$(MODULES_ENABLED)/$(SNIPPET_LINK)
	install -m 644 README.md LICENSE $(DESTDIR)$(DOC_DIR)/
	install -m 644 $(wildcard docs/*.md docs/*.yaml docs/*.yml) \
	    $(DESTDIR)$(DOC_DIR)/docs/
	install -m 644 $(wildcard conf-examples/*.conf) \
	    $(DESTDIR)$(DOC_DIR)/conf-examples/
	install -m 755 tools/timpush-reindex $(DESTDIR)$(SBIN_DIR)/

# Exactly what install put there; the module directories (and the
# modules directory's parent) go too when nothing else is left in them:
# no other module package uses them.  modules-enabled and the sbin
# directory stay (nginx-common and base-files own them).
uninstall:
	rm -f $(DESTDIR)$(MODULES_ENABLED)/$(SNIPPET_LINK) \
	    $(DESTDIR)$(MODULES_AVAILABLE)/$(SNIPPET) \
	    $(DESTDIR)$(MODULES_DIR)/ngx_http_timpush_module.so \
	    $(DESTDIR)$(SBIN_DIR)/timpush-reindex
	rm -rf $(DESTDIR)$(DOC_DIR)
	rmdir --ignore-fail-on-non-empty $(DESTDIR)$(MODULES_DIR) \
	    $(DESTDIR)$(dir $(MODULES_DIR)) $(DESTDIR)$(MODULES_AVAILABLE) \
	    2>/dev/null || true

clean:
	rm -rf $(BUILD) t/servroot* t/cert/out
