/* Symbol visibility: the whole tree builds with -fvisibility=hidden; public
 * API of libkernrun is marked KR_API. Plugins export only their entry symbol. */
#ifndef KERNRUN_EXPORT_H
#define KERNRUN_EXPORT_H
#define KR_API __attribute__((visibility("default")))
#define KR_UNUSED __attribute__((unused))
#endif
