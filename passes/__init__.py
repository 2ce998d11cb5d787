"""ember.passes"""
