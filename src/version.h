/* version.h: the one place moongate's version is written (the Makefile, the
 * rockspec's name and the Debian package read it from here). */
#ifndef MG_VERSION_H
#define MG_VERSION_H

#define MG_VERSION "0.2.0"

#endif
